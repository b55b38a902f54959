"""Making and revoking API keys (`training keys`, `training up`): the key file's only writer.

Records are written whole under a file lock and renamed into place (mode 0600), so a service
re-reading the file (``training.serving.keys.KeyStore``) sees the old file or the new one,
never half of one. A key is shown once, when it is made, and stored nowhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from training.errors import UserError
from training.filelock import exclusive
from training.serving.keys import SCOPES, KeyFile, KeyRecord, Scope, digest, read_key_file

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:@-]{0,99}")


class KeyStoreError(UserError):
    """A request to the key store that cannot be done (unknown name, bad scope, ...)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeyRing:
    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[KeyRecord]:
        return sorted(read_key_file(self.path).values(), key=lambda r: r.created_at)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, KeyRecord]]:
        with exclusive(f"{self.path}.lock"):
            records = read_key_file(self.path)
            yield records
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(KeyFile(keys=list(records.values())).model_dump_json(indent=1))
            os.replace(tmp, self.path)

    def create(self, name: str, scope: Scope) -> tuple[KeyRecord, str]:
        """A new key: its record and the key itself, which is shown once and stored nowhere."""
        if scope not in SCOPES:
            raise KeyStoreError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if not _NAME.fullmatch(name):
            raise KeyStoreError(f"key name {name!r}: 1-100 letters, digits, spaces or ._:@-")
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        with self._locked() as records:
            key_id = secrets.token_hex(6)
            while key_id in records:
                key_id = secrets.token_hex(6)
            record = KeyRecord(
                id=key_id,
                name=name,
                scope=scope,
                salt=salt,
                digest=digest(salt, secret),
                created_at=_now(),
            )
            records[key_id] = record
        return record, f"tk_{key_id}_{secret}"

    def revoke(self, name_or_id: str) -> list[KeyRecord]:
        """Revoke the active keys with this id or name; returns what was revoked."""
        now = _now()
        revoked: list[KeyRecord] = []
        with self._locked() as records:
            for key_id, record in list(records.items()):
                if record.active and name_or_id in (record.id, record.name):
                    records[key_id] = record.model_copy(update={"revoked_at": now})
                    revoked.append(records[key_id])
            if not revoked:  # raised inside the lock: the file is left as it was
                raise KeyStoreError(f"no active key with id or name {name_or_id!r}")
        return revoked

    def renew(self, name: str, scope: Scope) -> str:
        """A fresh key under ``name`` for a process that starts (`training up`, the rollout's
        smoke predictions); the key its previous start made is revoked."""
        with contextlib.suppress(KeyStoreError):  # the first start has nothing to revoke
            self.revoke(name)
        _, key = self.create(name, scope)
        return key

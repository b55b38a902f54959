"""API keys: made and revoked by `training keys`, checked by the services, never stored in clear.

A key reads ``tk_<id>_<secret>``: the id finds its record, the secret is checked against a
salted HMAC-SHA256 in constant time. The secret is 256 random bits, so a fast hash is enough
(nothing to brute-force) and a check costs microseconds on the hot path. The record file
(JSON, mode 0600) is the only shared state: the services re-read it when it changes, so a new
or revoked key takes effect within a second, without a restart, and a built bento needs no
run database to check keys. Stdlib only: the bento carries this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from training.errors import UserError
from training.filelock import exclusive

Scope = Literal["predict", "admin"]
SCOPES: tuple[Scope, ...] = ("predict", "admin")
_KEY = re.compile(r"tk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:@-]{0,99}")
RELOAD_EVERY_S = 0.5
log = logging.getLogger("training.keys")


class KeyStoreError(UserError):
    """A request to the key store that cannot be done (unknown name, bad scope, ...)."""


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    scope: Scope
    salt: str
    digest: str
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, Any]:
        """What may be shown: never the salt or the digest."""
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def _digest(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def grants(scope: Scope, needed: Scope) -> bool:
    """An admin key may do everything a predict key may."""
    return scope in ("admin", needed)


class KeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, KeyRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0

    # -- reading (services) -----------------------------------------------------------------

    def _load(self) -> dict[str, KeyRecord]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {r["id"]: KeyRecord(**r) for r in data.get("keys", [])}

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_EVERY_S and self._stamp is not None:
            return
        self._checked = now
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        except OSError as exc:  # unreadable: keep what was known (none at first: fail closed)
            log.error("API key file %s cannot be read: %s", self.path, exc)
            return
        if stamp != self._stamp:
            # A file being replaced is read whole or not at all (writers rename into place).
            try:
                self._records = self._load()
                self._stamp = stamp
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.error("API key file %s cannot be used: %s", self.path, exc)

    def verify(self, presented: str, needed: Scope) -> KeyRecord | None:
        """The active record this key belongs to if it grants ``needed``; else None."""
        self._refresh()
        match = _KEY.fullmatch(presented)
        record = self._records.get(match.group(1)) if match else None
        secret = match.group(2) if match else presented
        expected = record.digest if record else "0" * 64
        salt = record.salt if record else "00" * 16
        valid = hmac.compare_digest(_digest(salt, secret), expected)
        if record is None or not valid or not record.active or not grants(record.scope, needed):
            return None
        return record

    def records(self) -> list[KeyRecord]:
        return sorted(self._load().values(), key=lambda r: r.created_at)

    # -- writing (the CLI) ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, KeyRecord]]:
        with exclusive(f"{self.path}.lock"):
            records = self._load()
            yield records
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(
                    {"version": 1, "keys": [asdict(r) for r in records.values()]}, fh, indent=1
                )
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
                digest=_digest(salt, secret),
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            records[key_id] = record
        return record, f"tk_{key_id}_{secret}"

    def revoke(self, name_or_id: str) -> list[KeyRecord]:
        """Revoke the active keys with this id or name; returns what was revoked."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        revoked: list[KeyRecord] = []
        with self._locked() as records:
            for key_id, record in list(records.items()):
                if record.active and name_or_id in (record.id, record.name):
                    records[key_id] = KeyRecord(**{**asdict(record), "revoked_at": now})
                    revoked.append(records[key_id])
        if not revoked:
            raise KeyStoreError(f"no active key with id or name {name_or_id!r}")
        return revoked


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key of a request: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].decode("latin-1").strip()
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
    return None

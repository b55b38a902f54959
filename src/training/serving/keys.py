"""API keys as the services check them: the key file's records, and one constant-time check.

A key reads ``tk_<id>_<secret>``: the id finds its record, the secret is checked against a
salted HMAC-SHA256 in constant time. The secret is 256 random bits, so a fast hash is enough
(nothing to brute-force) and a check costs microseconds on the hot path. The record file
(JSON, mode 0600) is the only shared state: a ``KeyStore`` re-reads it when it changes, so a
new or revoked key takes effect within a second, without a restart, and a built bento needs
no run database to check keys. Keys are made and revoked by ``training.ops.keys``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Scope = Literal["predict", "admin"]
SCOPES: tuple[Scope, ...] = ("predict", "admin")
KEY = re.compile(r"tk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
RELOAD_EVERY_S = 0.5
#: Fields of a record that are never shown, not even to an admin.
PRIVATE = frozenset({"salt", "digest"})
log = logging.getLogger("training.keys")


class KeyRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

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


class KeyFile(BaseModel):
    """The key file as stored."""

    version: int = 1
    keys: list[KeyRecord] = Field(default_factory=list)


def read_key_file(path: Path) -> dict[str, KeyRecord]:
    """The records of a key file by id; none when it does not exist yet."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return {}
    return {record.id: record for record in KeyFile.model_validate_json(text).keys}


def digest(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def grants(scope: Scope, needed: Scope) -> bool:
    """An admin key may do everything a predict key may."""
    return scope in ("admin", needed)


class KeyStore:
    """What a service holds: the key file's records, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, KeyRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0

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
                self._records = read_key_file(self.path)
                self._stamp = stamp
            except (OSError, ValidationError) as exc:
                log.error("API key file %s cannot be used: %s", self.path, exc)

    def verify(self, presented: str, needed: Scope) -> KeyRecord | None:
        """The active record this key belongs to if it grants ``needed``; else None."""
        self._refresh()
        match = KEY.fullmatch(presented)
        record = self._records.get(match.group(1)) if match else None
        secret = match.group(2) if match else presented
        expected = record.digest if record else "0" * 64
        salt = record.salt if record else "00" * 16
        valid = hmac.compare_digest(digest(salt, secret), expected)
        if record is None or not valid or not record.active or not grants(record.scope, needed):
            return None
        return record

    def active_record(self, key_id: str, needed: Scope) -> KeyRecord | None:
        """The record of a key known by its id (a session made from it earlier) while it is
        active and grants ``needed``: a revoked key ends its sessions within a second."""
        self._refresh()
        record = self._records.get(key_id)
        if record is None or not record.active or not grants(record.scope, needed):
            return None
        return record


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key of a request: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].decode("latin-1").strip()
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
    return None

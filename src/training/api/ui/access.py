"""Who may use the dashboard: a signed, expiring session cookie, made at login from an admin key,
and a CSRF token bound to that session on every form that changes something.

A browser cannot send a key with each request, and the key must stay out of URLs, browser
storage and logs. So the login form posts it once; the answer is a cookie that holds no key,
only the session's random id, the key's public id and name, and when it expires, signed with
HMAC-SHA256 (``UI_SESSION_SECRET``, else a random secret kept in ``DATA_DIR/ui_session.key``).
Each request checks the signature, the expiry and that the key is still active and admin, so
a revoked key ends its sessions within a second; a logout ends its session in the service too.
The cookie is ``HttpOnly`` (no script reads it), ``Secure`` and ``SameSite=Strict`` (no other
site's page sends it), scoped to the dashboard's path. Every visitor gets a session, signed in
or not, so the login form itself carries a CSRF token (no login forced from another site).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from training.errors import UserError
from training.serving.keys import KeyStore
from training.settings import ServerSettings

COOKIE = "training_ui"
SECRET_FILE = "ui_session.key"
SECRET_BYTES = 32


class LoginRequired(UserError):
    """No valid session where the dashboard needs one (a page sends the visitor to log in)."""

    status_code = 401


class Forbidden(UserError):
    status_code = 403


@dataclass(frozen=True)
class Session:
    sid: str
    expires: int
    key_id: str | None = None
    name: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.key_id is not None

    @property
    def caller(self) -> str:
        """Who asked, for the records that name it (an alias move): the admin key's name."""
        return f"ui:{self.name}" if self.name else "ui"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issue and check sessions and their CSRF tokens; ``keys`` None: keys are not required."""

    def __init__(
        self,
        secret: bytes,
        keys: KeyStore | None,
        lifetime_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret, self.keys, self.lifetime_s, self._clock = secret, keys, lifetime_s, clock
        # Sessions logged out, until they would expire: a copied cookie is refused after a
        # logout too (held in memory: after a restart, only expiry or revoking the key ends it).
        self._ended: dict[str, int] = {}

    def _mac(self, purpose: bytes, data: bytes) -> bytes:
        return hmac.new(self._secret, purpose + b"|" + data, hashlib.sha256).digest()

    def _new(self, key_id: str | None = None, name: str | None = None) -> Session:
        expires = int(self._clock() + self.lifetime_s)
        return Session(secrets.token_urlsafe(16), expires, key_id, name)

    def anonymous(self) -> Session:
        return self._new()

    def login(self, presented: str) -> Session:
        """A new session for an admin key (a new id: nothing of the session before carries
        over); the key itself is kept nowhere."""
        if self.keys is None:
            return self._new()
        record = self.keys.verify(presented, "admin")
        if record is not None:
            return self._new(record.id, record.name)
        if self.keys.verify(presented, "predict") is not None:
            raise Forbidden("this key may only predict; the dashboard needs an admin key")
        raise LoginRequired("invalid or revoked API key", field="key")

    def cookie(self, session: Session) -> str:
        fields = {"sid": session.sid, "exp": session.expires}
        if session.key_id is not None:
            fields.update(kid=session.key_id, name=session.name)
        payload = json.dumps(fields, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(b'session', payload))}"

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie holds, if its signature is ours, it has not expired and its
        key (if any) is still an active admin key; else None."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 1024:
            return None
        payload_text, mac_text = cookie.split(".")
        try:
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(b"session", payload)):
            return None
        fields = json.loads(payload)  # ours: it is signed
        session = Session(fields["sid"], int(fields["exp"]), fields.get("kid"), fields.get("name"))
        if session.expires <= self._clock() or session.sid in self._ended:
            return None
        keys, key_id = self.keys, session.key_id
        if keys is not None and key_id is not None and keys.active_record(key_id, "admin") is None:
            return None
        return session

    def end(self, session: Session) -> None:
        """Log out: the session's cookie is refused from now on, wherever it was copied."""
        now = self._clock()
        self._ended = {sid: t for sid, t in self._ended.items() if t > now}
        self._ended[session.sid] = session.expires

    def csrf(self, session: Session) -> str:
        return _b64(self._mac(b"csrf", session.sid.encode()))

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf(session))


def session_secret(settings: ServerSettings) -> bytes:
    """UI_SESSION_SECRET, else the secret kept in DATA_DIR/ui_session.key: 32 random bytes made
    on first use, mode 0600, never logged. Deleting the file ends every session at the next
    start. Made beside, then linked into place, so two services starting at once share one."""
    if settings.ui_session_secret is not None:
        return settings.ui_session_secret.get_secret_value().encode()
    path = settings.data_dir / SECRET_FILE
    if not path.exists():
        _make_secret(path)
    if path.stat().st_mode & 0o077:
        raise UserError(
            f"{path} is readable by other users: `chmod 600 {path}` (or delete it: a new "
            "secret is made, and every dashboard session ends)"
        )
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except ValueError:
        secret = b""
    if len(secret) < SECRET_BYTES:
        raise UserError(f"{path} holds no usable secret: delete it, and a new one is made")
    return secret


def _make_secret(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(secrets.token_hex(SECRET_BYTES))
    try:
        os.link(fresh, path)  # fails if another process made it first: theirs is kept
    except FileExistsError:
        pass
    finally:
        fresh.unlink()

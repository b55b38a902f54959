"""The dashboard's sessions and their secret, without HTTP: signing, expiry, revocation, CSRF."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from training.api.ui.access import (
    SECRET_FILE,
    Forbidden,
    LoginRequired,
    Sessions,
    session_secret,
)
from training.errors import UserError
from training.ops.keys import KeyRing
from training.serving.keys import KeyStore
from training.settings import ServerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing(tmp_path / "api_keys.json")


def test_a_session_lasts_its_lifetime_and_not_a_second_more(ring: KeyRing, tmp_path: Path) -> None:
    _, admin = ring.create("ops", "admin")
    clock = Clock()
    sessions = Sessions(b"s" * 32, KeyStore(ring.path), 3600, clock)
    session = sessions.login(admin)
    cookie = sessions.cookie(session)
    assert sessions.read(cookie) == session and session.caller == "ui:ops"
    clock.now += 3599
    assert sessions.read(cookie) == session
    clock.now += 1
    assert sessions.read(cookie) is None


def test_only_our_secret_signs_and_a_logout_refuses_every_copy(ring: KeyRing) -> None:
    _, admin = ring.create("ops", "admin")
    keys = KeyStore(ring.path)
    ours, theirs = Sessions(b"a" * 32, keys, 3600), Sessions(b"b" * 32, keys, 3600)
    session = ours.login(admin)
    assert theirs.read(ours.cookie(session)) is None
    assert ours.csrf(session) != theirs.csrf(session)
    assert ours.csrf_ok(session, ours.csrf(session))
    assert not ours.csrf_ok(session, ours.csrf(ours.anonymous()))
    assert not ours.csrf_ok(session, None) and not ours.csrf_ok(session, "")
    ours.end(session)
    assert ours.read(ours.cookie(session)) is None


def test_login_takes_admin_keys_only_and_keeps_none(ring: KeyRing) -> None:
    _, admin = ring.create("ops", "admin")
    _, predict = ring.create("app", "predict")
    sessions = Sessions(b"s" * 32, KeyStore(ring.path), 3600)
    with pytest.raises(Forbidden):
        sessions.login(predict)
    with pytest.raises(LoginRequired):
        sessions.login("tk_000000000000_" + "x" * 43)
    cookie = sessions.cookie(sessions.login(admin))
    assert admin.split("_", 2)[2] not in cookie and admin not in cookie
    # Keys not required: anybody is let in, under no key's name.
    assert Sessions(b"s" * 32, None, 60).login("").caller == "ui"


def test_the_secret_is_made_once_private_and_kept(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path)
    first = session_secret(settings)
    path = tmp_path / SECRET_FILE
    assert len(first) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert session_secret(settings) == first
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left beside it
    os.chmod(path, 0o644)
    with pytest.raises(UserError, match="readable by other users"):
        session_secret(settings)
    path.chmod(0o600)
    path.write_text("not hex")
    with pytest.raises(UserError, match="no usable secret"):
        session_secret(settings)


def test_a_configured_secret_wins_is_long_and_never_shown(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, ui_session_secret="k" * 40)
    assert session_secret(settings) == b"k" * 40 and not (tmp_path / SECRET_FILE).exists()
    assert "k" * 40 not in repr(settings) and settings.public_view()["UI_SESSION_SECRET"] == (
        "********"
    )
    with pytest.raises(ValidationError, match="at least 32 characters"):
        ServerSettings(data_dir=tmp_path, ui_session_secret="short")

"""API keys: shown once, stored as salted hashes (0600), checked in constant time, revocable."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from training.cli.app import main
from training.ops.keys import KeyRing, KeyStoreError
from training.serving.keys import RELOAD_EVERY_S, KeyStore, presented_key


def test_a_key_is_checked_by_scope_and_stored_only_as_a_salted_hash(tmp_path: Path) -> None:
    ring, store = KeyRing(tmp_path / "keys.json"), KeyStore(tmp_path / "keys.json")
    record, key = ring.create("alice", "predict")
    _, admin_key = ring.create("ops", "admin")
    assert store.verify(key, "predict") == record
    assert store.verify(key, "admin") is None  # a predict key cannot administer
    assert store.verify(admin_key, "predict") is not None  # an admin key may predict
    assert store.verify(key[:-1] + ("A" if key[-1] != "A" else "B"), "predict") is None
    assert store.verify("tk_000000000000_" + "x" * 43, "predict") is None
    assert store.verify("not a key at all", "predict") is None
    text = (tmp_path / "keys.json").read_text()
    assert key.split("_")[-1] not in text and admin_key.split("_")[-1] not in text
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600


def test_a_revoked_key_stops_working_for_a_running_reader(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    _, key = KeyRing(path).create("bob", "predict")
    reader = KeyStore(path)  # what a service holds
    assert reader.verify(key, "predict") is not None
    KeyRing(path).revoke("bob")
    deadline = time.monotonic() + 5 * RELOAD_EVERY_S + 2
    while reader.verify(key, "predict") is not None:
        assert time.monotonic() < deadline, "a revoked key kept working"
        time.sleep(0.1)
    with pytest.raises(KeyStoreError, match="no active key"):
        KeyRing(path).revoke("bob")


def test_bad_names_and_scopes_are_refused(tmp_path: Path) -> None:
    store = KeyRing(tmp_path / "keys.json")
    with pytest.raises(KeyStoreError, match="scope"):
        store.create("carol", "root")  # type: ignore[arg-type]
    with pytest.raises(KeyStoreError, match="key name"):
        store.create("", "predict")


def test_keys_are_read_from_bearer_or_x_api_key_headers() -> None:
    assert presented_key([(b"authorization", b"Bearer tk_a_b")]) == "tk_a_b"
    assert presented_key([(b"x-api-key", b"tk_c_d")]) == "tk_c_d"
    assert presented_key([(b"authorization", b"Basic abc")]) is None


def test_the_keys_commands(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--name", "ci", "--scope", "admin", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith(f"tk_{created['id']}_") and created["scope"] == "admin"
    assert main(["keys", "create", "--name", "dash"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("tk_") and "shown once" in err
    assert main(["keys", "list", "--json"]) == 0
    listed = capsys.readouterr().out
    assert created["key"] not in listed and "digest" not in listed and "salt" not in listed
    assert [k["name"] for k in json.loads(listed)["keys"]] == ["ci", "dash"]
    assert main(["keys", "revoke", "dash"]) == 0
    assert "revoked key" in capsys.readouterr().out
    assert main(["keys", "revoke", "dash"]) == 2
    assert capsys.readouterr().err == "error: no active key with id or name 'dash'\n"

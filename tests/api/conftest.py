"""Fixtures of the in-process training API (see ``inprocess.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from inprocess import Api, open_api

from training.ops.keys import KeyRing


@pytest.fixture
def api(env: Path) -> Iterator[Api]:
    with open_api(env) as api:
        yield api


@pytest.fixture
def keyed(env: Path) -> Iterator[tuple[Api, dict[str, str], dict[str, str]]]:
    ring = KeyRing(env / "api_keys.json")
    _, admin = ring.create("admin", "admin")
    _, predict = ring.create("predict", "predict")
    with open_api(env, require_api_key=True) as api:
        yield api, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {predict}"}

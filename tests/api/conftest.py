"""Fixtures of the in-process training API (see ``inprocess.py``) and of its dashboard seen by
a visitor (``visitor.py``): keys required, logged in or not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from inprocess import Api, open_api
from visitor import Visitor

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


@pytest.fixture
def keys(env: Path) -> dict[str, str]:
    ring = KeyRing(env / "api_keys.json")
    return {"admin": ring.create("admin", "admin")[1], "predict": ring.create("p", "predict")[1]}


@pytest.fixture
def site(env: Path, keys: dict[str, str]) -> Iterator[Visitor]:
    """The dashboard with keys required, seen over HTTPS (its cookie is Secure)."""
    with open_api(env, require_api_key=True) as api:
        api.client.base_url = "https://testserver/training"
        yield Visitor(api)


@pytest.fixture
def member(site: Visitor, keys: dict[str, str]) -> Visitor:
    assert site.log_in(keys["admin"]).status_code == 303
    return site

"""What the ops tests share: the container tools."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def podman() -> None:
    """podman, runc and debootstrap are here (Debian's packages; `make test` installs them as
    root); else the test skips, or fails under REQUIRE_CONTAINERS=1 (CI)."""
    from training.ops.image import missing_tools

    missing = missing_tools()
    if missing:
        reason = (
            f"{', '.join(missing)} not installed (Debian: apt-get install podman runc debootstrap)"
        )
        if os.environ.get("REQUIRE_CONTAINERS") == "1":
            pytest.fail(f"REQUIRE_CONTAINERS=1 but {reason}")
        pytest.skip(reason)

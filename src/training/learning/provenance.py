"""Where a run ran: library versions and the code's git commit."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from typing import Any

from training.settings import project_root

LIBRARIES = ("scikit-learn", "bentoml", "numpy", "pandas")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": versions,
        "git_commit": commit,
        "git_dirty": dirty,
    }

"""The commands the stack runs (installed beside this Python), and starting them with logs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def tool(name: str) -> str:
    """A command installed beside this Python (the project's .venv), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else name


def spawn_logged(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` with stdout and stderr appended to ``log`` and no stdin."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

"""The commands the stack runs (installed beside this Python), and starting them with logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from training.errors import UserError


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


def run_checked(
    args: list[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run a command to its end; its stdout, or a UserError naming ``what`` with the last lines
    it wrote."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = " | ".join(line for line in (done.stderr or done.stdout).strip().splitlines()[-3:])
        raise UserError(f"{what} failed (exit {done.returncode}): {tail}")
    return done.stdout


def keyed_env(keys_path: Path) -> dict[str, str]:
    """The environment of a service `training up` starts: this process's, API keys required."""
    return {
        **os.environ,
        "REQUIRE_API_KEY": "true",
        "API_KEYS_FILE": str(keys_path),
        "BENTOML_DO_NOT_TRACK": "true",
    }

"""The supervisor with real processes: a child's own children do not outlive it."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from training.ops import supervisor
from training.ops.supervisor import Supervisor


def _parent_of_a_sleeper(log: Path) -> subprocess.Popen[bytes]:
    # Like `bentoml serve`: a process whose worker lives on if the parent is killed outright.
    with log.open("ab") as out:
        return subprocess.Popen(["sh", "-c", "sleep 600 & wait"], stdout=out)


def _orphaned(pid: int) -> bool:
    """The process has died and handed its children to init (it is a zombie, or gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_child_killed_while_its_workers_are_listed_leaves_no_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    sup = Supervisor(
        {"service": _parent_of_a_sleeper},
        {"service": tmp_path / "service.log"},
        said.append,
        stop_strays=frozenset({"service"}),
    )
    sup.start()
    child = sup.children["service"]
    assert child.proc is not None
    parent = child.proc.pid
    deadline = time.monotonic() + 10
    while not psutil.Process(parent).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    sup.heal()  # the worker is seen
    [worker] = child.descendants
    listing = supervisor._descendants

    def killed_while_listing(pid: int) -> list[psutil.Process]:
        # The worst moment: the child dies as its workers are being listed.
        psutil.Process(pid).send_signal(signal.SIGKILL)
        while not _orphaned(pid):
            time.sleep(0.01)
        return listing(pid)

    monkeypatch.setattr(supervisor, "_descendants", killed_while_listing)
    try:
        sup.heal()
        monkeypatch.setattr(supervisor, "_descendants", listing)
        sup.heal()
        assert not worker.is_running(), "the dead child's worker was left running"
        assert any("service exited with -9; restarting it" in line for line in said)
    finally:
        sup.stop()
        if worker.is_running():
            worker.kill()

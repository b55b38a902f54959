"""The long-running children of `training up`: started with their logs, watched, healed.

A child that dies once the stack serves (the training service, the prediction service or
Caddy) is started again after a pause that doubles with each crash in a row (1 s up to 30 s;
a child that then stays up a minute starts from 1 s again), while the others keep serving:
one crash never takes the whole door down.

A `bentoml serve` killed outright leaves its worker behind, still holding the port and
answering with no one to watch it (seen here), so the workers a child had are stopped before
it starts again. The training service's jobs are left alone: they notice their service's
death themselves and record it.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

Spawn = Callable[[Path], subprocess.Popen[bytes]]
Say = Callable[[str], None]
BACKOFF_S = (1, 2, 4, 8, 16, 30)
STABLE_S = 60.0  # up this long after a restart: the next crash waits the shortest pause again
STRAY_GRACE_S = 5.0


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@dataclass
class Child:
    name: str
    spawn: Spawn
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes: int = 0  # in a row
    restart_at: float | None = field(default=None)  # when a dead child is started again
    stop_strays: bool = False  # stop the processes it started when it dies
    descendants: list[psutil.Process] = field(default_factory=list)  # as last seen

    def start(self) -> None:
        self.proc = self.spawn(self.log)
        self.started_at = time.monotonic()

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


class Supervisor:
    def __init__(
        self,
        spawns: dict[str, Spawn],
        logs: dict[str, Path],
        say: Say,
        stop_strays: frozenset[str] = frozenset(),
    ) -> None:
        self.children = {
            name: Child(name, spawns[name], logs[name], stop_strays=name in stop_strays)
            for name in spawns
        }
        self.say = say
        # The rollout adds and removes children from its own thread while heal() runs here.
        self._lock = threading.RLock()

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        with self._lock:
            return {c.name: c.proc for c in self.children.values() if c.proc is not None}

    def start(self) -> None:
        with self._lock:
            for child in self.children.values():
                child.start()

    def add(self, name: str, spawn: Spawn, log: Path, *, stop_strays: bool = True) -> Child:
        """Start one more child, watched and healed like the others."""
        child = Child(name, spawn, log, stop_strays=stop_strays)
        with self._lock:
            if name in self.children:
                raise ValueError(f"a child named {name!r} runs already")
            self.children[name] = child
            child.start()
        return child

    def remove(self, name: str, timeout: float = 30) -> None:
        """Stop a child (and what it started) and no longer watch it."""
        with self._lock:
            child = self.children.pop(name, None)
        if child is None or child.proc is None:
            return
        workers = _descendants(child.proc.pid) or child.descendants
        _terminate(child.proc, timeout)
        _stop(workers)

    def heal(self) -> None:
        """Notice a child that died and start it again once its pause is over."""
        with self._lock:
            for child in list(self.children.values()):
                self._heal(child, time.monotonic())

    def _heal(self, child: Child, now: float) -> None:
        code = child.exit_code
        if code is None and child.stop_strays and child.proc is not None:
            seen = _descendants(child.proc.pid)
            # A child that died during the scan had its workers handed to init already:
            # the scan missed them, so the last full one is kept (seen here: a stray left).
            code = child.exit_code
            if code is None:
                child.descendants = seen
        if code is None:
            return
        if child.restart_at is None:
            _stop(child.descendants)
            child.descendants = []
            if now - child.started_at >= STABLE_S:
                child.crashes = 0
            pause = BACKOFF_S[min(child.crashes, len(BACKOFF_S) - 1)]
            child.crashes += 1
            child.restart_at = now + pause
            self.say(
                f"{child.name} exited with {code}; restarting it in {pause} s, the others "
                f"keep serving. Its log ({child.log}) ends with:\n{tail(child.log)}"
            )
        elif now >= child.restart_at:
            child.restart_at = None
            child.start()
            assert child.proc is not None
            self.say(f"{child.name} restarted (pid {child.proc.pid})")

    def stop(self, timeout: float = 30) -> None:
        procs = list(self.processes.values())
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            _terminate(proc, timeout)


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (a server finishes its requests in flight), SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _stop(processes: list[psutil.Process]) -> None:
    """SIGTERM, then SIGKILL what is left after a grace period (psutil checks each process is
    still the one it saw, not a reused pid)."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=STRAY_GRACE_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()

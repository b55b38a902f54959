"""Real servers for tests: free ports, readiness by polling, stopped by pid with no orphans.

`bentoml serve` puts each worker in a process group of its own, so a server is stopped by
SIGTERM to the `bentoml serve` process itself, and its whole process tree (noted before the
signal) is checked to be gone afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["BENTOML_DO_NOT_TRACK"] = "true"
    env.update(extra)
    return env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"{what}: process exited with {proc.returncode}\n{tail}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    raise AssertionError(f"{what}: not ready after {timeout} s\n{tail}")


def stop_process_tree(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the process, wait, then require that nothing of its tree outlives it."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"pid {proc.pid} ignored SIGTERM for {timeout} s") from None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family
    ):
        time.sleep(0.1)
    survivors = [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes outlived pid {proc.pid}: {survivors}"


@contextmanager
def running(
    args: list[str],
    *,
    env: dict[str, str],
    log: Path,
    ready_url: str,
    cwd: Path = REPO,
    timeout: float = 120,
) -> Iterator[Server]:
    handle = log.open("wb")
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: httpx.get(ready_url, timeout=2).status_code == 200,
            timeout,
            " ".join(args[:3]),
            proc,
            log,
        )
        yield Server(proc, ready_url.rsplit("/", 1)[0], log)
    finally:
        stop_process_tree(proc)
        handle.close()


def serve_model(
    model_tag: str, *, bentoml_home: Path, log: Path, port: int | None = None, **env: str
) -> AbstractContextManager[Server]:
    """`bentoml serve` of src/service.py (development serving) for one model tag.

    Each server gets a BentoML home of its own that shares the models: every `bentoml serve`
    empties its home's Prometheus folder when it starts, so servers sharing one home would
    lose each other's metrics."""
    port = port or free_port()
    home = log.parent / f"bentoml-home-{port}"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "models").exists():
        (home / "models").symlink_to(bentoml_home / "models", target_is_directory=True)
    return running(
        [
            str(BIN / "bentoml"),
            "serve",
            "service:Prediction",
            "--working-dir",
            str(REPO / "src"),
            "--arg",
            f"model_tag={model_tag}",
            "--port",
            str(port),
        ],
        env=base_env(BENTOML_HOME=str(home), **{"SERVICE_WORKERS": "1", **env}),
        log=log,
        ready_url=f"http://127.0.0.1:{port}/readyz",
    )


@contextmanager
def caddy(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Caddy with the repository's Caddyfile, ready once its local CA exists and HTTPS answers."""
    from training.ops.edge import ca_certificate, start_caddy

    proc = start_caddy(env, log)
    ca = ca_certificate(Path(env["CADDY_DATA_DIR"]))
    url = f"https://127.0.0.1:{env['HTTPS_PORT']}/livez"
    try:

        def answers() -> bool:
            tls = ssl.create_default_context(cafile=ca)
            return httpx.get(url, verify=tls, timeout=10).status_code > 0

        wait_until(answers, 60, "caddy", proc, log)
        yield proc
    finally:
        stop_process_tree(proc)


def serve_training(
    data_dir: Path, log: Path, port: int | None = None, **env: str
) -> AbstractContextManager[Server]:
    """`training serve` on its own data folder and BentoML home (beside the data folder)."""
    port = port or free_port()
    return running(
        [str(BIN / "training"), "serve", "--port", str(port)],
        env=base_env(DATA_DIR=str(data_dir), BENTOML_HOME=str(data_dir.parent / "bentoml"), **env),
        log=log,
        ready_url=f"http://127.0.0.1:{port}/readyz",
    )

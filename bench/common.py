"""What the benchmarks share: ports, wrk runs, server processes and a trained iris model."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IRIS_ROW = {
    "sepal_length_cm": 5.1,
    "sepal_width_cm": 3.5,
    "petal_length_cm": 1.4,
    "petal_width_cm": 0.2,
}

WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}", "rb"):read("*a")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %f %f\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree_values(pid: int, measure: Callable[[psutil.Process], float]) -> list[float]:
    """A measure of a process and of each of its children (gone ones are left out)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    values = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            values.append(measure(p))
    return values


def _tree_sum(pid: int, measure: Callable[[psutil.Process], float]) -> float:
    """A measure summed over a process and all its children (gone ones count 0)."""
    return sum(_tree_values(pid, measure))


def tree_rss_mb(pid: int) -> float:
    return _tree_sum(pid, lambda p: p.memory_info().rss) / 2**20


def largest_rss_mb(pid: int) -> float:
    """The RSS of the largest process of a tree: a server's worker (its supervisor is small)."""
    return max(_tree_values(pid, lambda p: p.memory_info().rss), default=0.0) / 2**20


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its children."""
    return _tree_sum(pid, lambda p: p.cpu_times().user + p.cpu_times().system)


def bench_setup(
    name: str, script: str, flags: tuple[str, ...] = ()
) -> tuple[argparse.Namespace, Path, dict[str, str], str]:
    """The wrk benchmarks' start: arguments (with the script's own on/off ``flags``), a work
    folder, its environment and an iris model."""
    parser = argparse.ArgumentParser(
        description=script, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    for flag in flags:
        parser.add_argument(flag, action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit(f"bench/{name}.py needs wrk: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    env = {
        **os.environ,
        "BENTOML_HOME": str(work / "bentoml"),
        "DATA_DIR": str(work / "data"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    env.pop("DATABASE_URL", None)
    print(f"training the iris model in {work} ...", file=sys.stderr)
    return args, work, env, train_model(env)


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    for child in family:
        if child.is_running():
            child.kill()


def wait_ready(
    url: str,
    body: bytes,
    proc: subprocess.Popen[bytes],
    timeout: float = 120,
    headers: dict[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            r = httpx.post(
                url,
                content=body,
                headers={"content-type": "application/json", **(headers or {})},
                timeout=5,
                verify=verify,
            )
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def wait_until_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Poll a health URL (GET) until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def wrk(
    url: str,
    body_path: Path,
    concurrency: int,
    duration: int,
    work: Path,
    headers: dict[str, str] | None = None,
) -> tuple[float, float, float, int]:
    """requests/s, p50 ms, p99 ms and errors (socket errors and non-2xx) of one wrk run."""
    script = work / f"post-{body_path.stem}.lua"
    script.write_text(WRK_LUA.format(body=body_path))
    threads = 1 if concurrency == 1 else 2
    extra = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{duration}s",
            "--latency",
            *extra,
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    requests, duration_us, errors, p50, p99 = line.split()[1:]
    return int(requests) / (int(duration_us) / 1e6), float(p50), float(p99), int(errors)


def service_command(tag: str, port: int | str) -> list[str]:
    """`bentoml serve` of src/service.py (as shipped) for model ``tag`` on ``port``."""
    return [
        str(BIN / "bentoml"),
        "serve",
        "service:Prediction",
        "--working-dir",
        str(ROOT / "src"),
        "--arg",
        f"model_tag={tag}",
        "--port",
        str(port),
    ]


def sample_rows(tag: str, env: dict[str, str], n: int) -> list[dict[str, Any]]:
    """``n`` valid rows for model ``tag`` (its feature schema's samples), read in a child so
    the bench itself never loads the model store."""
    code = (
        "import json, sys, bentoml\n"
        "from training.serving.card import ModelCard\n"
        "card = ModelCard.from_stored(bentoml.models.get(sys.argv[1]))\n"
        "print(json.dumps(card.features.sample_rows(int(sys.argv[2]))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, tag, str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def train_model(env: dict[str, str], *request: str) -> str:
    """`training train` of ``request`` (default: the iris logistic regression), its tag."""
    request = request or ("--dataset", "iris", "--model", "logistic_regression")
    out = subprocess.run(
        [str(BIN / "training"), "train", *request, "--cv", "0", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return str(json.loads(out)["model_tag"])

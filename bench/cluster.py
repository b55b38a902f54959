"""Training on a Dask cluster beside today's local processes, through the training API.

    .venv/bin/python bench/cluster.py [--tiny 10] [--trees 100,200,300] [--cancels 3]

Starts `training scheduler`, `training worker`s (each in a folder of its own) and `training
serve` with TRAINING_CLUSTER, and `training serve` without it (local processes), then prints:
- start-up: each service to ready; scheduler and workers to registered; a local Dask cluster
  (LocalCluster, 2 workers) in process, the alternative for TRAINING_CLUSTER unset;
- a sweep of 12 RandomForest fits (digits, cv 2): wall time on 1 worker, on 2 workers (floor
  1.6x), and with the local executor at TRAINING_MAX_JOBS=2 (floor: the cluster no slower);
- per tiny job (iris logistic regression, one at a time on an idle executor): submit to
  running (its worker reports its first stage) p50/p99, and submit to finished (the overhead
  of a job on the cluster against a local one);
- cancel of a running job: request to KILLED.
Figures taken on a shared machine are provisional.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from common import BIN, free_port, stop, wait_until_ready

QUICK = {"dataset": "iris", "model": "logistic_regression", "cv": 0}
SLOW = {"dataset": "digits", "model": "random_forest", "params": {"n_estimators": 3000}, "cv": 5}
WAITING = {"queued", "sent to the cluster", "starting"}


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@contextlib.contextmanager
def spawned(args: list[str], log: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, env={**os.environ, "BENTOML_DO_NOT_TRACK": "true", **env}, stdout=out,
            stderr=subprocess.STDOUT, cwd=log.parent,
        )  # fmt: skip
    try:
        yield proc
    finally:
        stop(proc)


def worker_names(address: str) -> set[str]:
    from distributed import Client

    with Client(address, timeout=10) as client:
        return {str(w["name"]) for w in client.scheduler_info()["workers"].values()}


@contextlib.contextmanager
def scheduler_and_workers(work: Path, count: int) -> Iterator[tuple[str, float]]:
    """A cluster of ``count`` workers: its address and seconds until all had registered."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    command = [str(BIN / "training"), "scheduler", "--port", str(port)]
    with contextlib.ExitStack() as stack:
        stack.enter_context(spawned(command, work / "scheduler.log"))
        for n in range(count):
            folder = work / f"w{n + 1}"
            folder.mkdir(exist_ok=True)
            worker = [str(BIN / "training"), "worker", address, "--name", f"w{n + 1}"]
            stack.enter_context(
                spawned(worker, folder / "worker.log", BENTOML_HOME=str(folder / "bentoml"))
            )
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError, TimeoutError):
                if len(worker_names(address)) == count:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not register")
            time.sleep(0.2)
        yield address, time.perf_counter() - started


@contextlib.contextmanager
def service(work: Path, **env: str) -> Iterator[tuple[str, float]]:
    """`training serve` on a store of its own: its URL and seconds to ready."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    command = [str(BIN / "training"), "serve", "--port", str(port)]
    store = {"DATA_DIR": str(work / "data"), "BENTOML_HOME": str(work / "bentoml")}
    with spawned(command, work / "serve.log", **store, **env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/readyz", proc)
        yield url, time.perf_counter() - started


def run(url: str, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/runs/{run_id}", timeout=30).json()
    return body


def sweep_seconds(url: str, trees: list[int]) -> float:
    grid = {"n_estimators": trees, "max_depth": [6, 10, 14, None]}
    body = {"dataset": "digits", "model": "random_forest", "grid": grid, "cv": 2}
    started = time.perf_counter()
    answer = httpx.post(f"{url}/sweeps", json=body, timeout=60).json()
    while httpx.get(f"{url}/sweeps/{answer['sweep_id']}", timeout=30).json()["status"] in (
        "QUEUED", "RUNNING",
    ):  # fmt: skip
        time.sleep(0.25)
    seconds = time.perf_counter() - started
    sweep = httpx.get(f"{url}/sweeps/{answer['sweep_id']}", timeout=30).json()
    assert sweep["status"] == "FINISHED", sweep
    return seconds


def tiny_jobs(url: str, count: int) -> tuple[list[float], list[float]]:
    """Submit to running and submit to finished of ``count`` tiny jobs, one at a time."""
    running, finished = [], []
    for seed in range(count):
        started = time.perf_counter()
        run_id = httpx.post(f"{url}/runs", json={**QUICK, "seed": seed}, timeout=30).json()[
            "run_id"
        ]
        seen_running = None
        while True:
            state = run(url, run_id)
            now = time.perf_counter() - started
            if seen_running is None and (state["stage"] not in WAITING):
                seen_running = now
            if state["status"] in ("FINISHED", "FAILED", "KILLED"):
                assert state["status"] == "FINISHED", state
                break
            time.sleep(0.01)
        running.append(seen_running or now)
        finished.append(now)
    return running, finished


def cancel_seconds(url: str, count: int) -> list[float]:
    taken = []
    for _ in range(count):
        run_id = httpx.post(f"{url}/runs", json=SLOW, timeout=30).json()["run_id"]
        while not (run(url, run_id)["stage"] or "").startswith("cross-validation"):
            time.sleep(0.1)
        started = time.perf_counter()
        answer = httpx.post(f"{url}/runs/{run_id}/cancel", timeout=60).json()
        taken.append(time.perf_counter() - started)
        assert answer["status"] == "KILLED", answer
    return taken


def local_cluster_start() -> float:
    """A LocalCluster of 2 worker processes with our worker set-up, to its workers' ready."""
    code = (
        "import time; t = time.perf_counter()\n"
        "from distributed import Client, LocalCluster\n"
        "if __name__ == '__main__':\n"
        "    c = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,"
        " preload=['training.jobs.nodes'])\n"
        "    Client(c).wait_for_workers(2)\n"
        "    print(time.perf_counter() - t)\n"
        "    c.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", type=int, default=10, help="tiny jobs per executor")
    parser.add_argument("--trees", default="100,200,300", help="the sweep's n_estimators")
    parser.add_argument("--cancels", type=int, default=3)
    args = parser.parse_args()
    trees = [int(t) for t in args.trees.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    figures: dict[str, Any] = {"local cluster (2 workers) ready": local_cluster_start()}

    with service(work / "local", TRAINING_MAX_JOBS="2") as (url, ready):
        figures["local service ready"] = ready
        figures["local tiny"] = tiny_jobs(url, args.tiny)
        figures["local sweep"] = sweep_seconds(url, trees)
        figures["local cancel"] = cancel_seconds(url, args.cancels)
    for count in (1, 2):
        with (
            scheduler_and_workers(work / f"cluster{count}", count) as (address, registered),
            service(work / f"service{count}", TRAINING_CLUSTER=address) as (url, ready),
        ):
            figures[f"cluster {count} registered"] = registered
            figures[f"cluster {count} service ready"] = ready
            figures[f"cluster {count} sweep"] = sweep_seconds(url, trees)
            if count == 2:
                figures["cluster tiny"] = tiny_jobs(url, args.tiny)
                figures["cluster cancel"] = cancel_seconds(url, args.cancels)
    report(figures, len(trees) * 4)


def report(f: dict[str, Any], fits: int) -> None:
    print("\nStart-up (s)")
    print("| what | seconds |\n|---|---|")
    for key in (
        "local service ready",
        "cluster 2 registered",
        "cluster 2 service ready",
        "local cluster (2 workers) ready",
    ):
        print(f"| {key} | {f[key]:.2f} |")
    one, two, local = f["cluster 1 sweep"], f["cluster 2 sweep"], f["local sweep"]
    print(f"\nSweep of {fits} RandomForest fits (digits, cv 2), wall time")
    print("| executor | seconds | ratio |\n|---|---|---|")
    print(f"| cluster, 1 worker | {one:.1f} | 1.00x |")
    print(f"| cluster, 2 workers | {two:.1f} | {one / two:.2f}x vs 1 worker (floor 1.6x) |")
    print(
        f"| local processes, TRAINING_MAX_JOBS=2 | {local:.1f} | "
        f"cluster {local / two:.2f}x as fast (floor 1.0x) |"
    )
    print("\nTiny job (iris logistic regression, one at a time), seconds")
    print("| executor | submit->running p50 | p99 | submit->finished p50 | p99 |")
    print("|---|---|---|---|---|")
    for name, key in (("cluster (2 workers)", "cluster tiny"), ("local processes", "local tiny")):
        running, finished = f[key]
        (r50, r99), (f50, f99) = percentiles(running), percentiles(finished)
        print(f"| {name} | {r50:.3f} | {r99:.3f} | {f50:.3f} | {f99:.3f} |")
    cluster_f50 = percentiles(f["cluster tiny"][1])[0]
    local_f50 = percentiles(f["local tiny"][1])[0]
    print(f"overhead of a tiny job, cluster - local (p50): {cluster_f50 - local_f50:+.3f} s")
    print("\nCancel of a running job (request -> KILLED), seconds")
    for name, key in (("cluster", "cluster cancel"), ("local", "local cancel")):
        values = f[key]
        print(f"| {name} | max {max(values):.2f} | each {', '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()

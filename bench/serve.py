"""Serving benchmark: this service beside idiomatic BentoML (with and without its adaptive
batching) and a bare echo, on a cheap model and on heavy ones, side by side in one run.

    .venv/bin/python bench/serve.py [--duration 10] [--concurrency 1 8 32]
                                    [--models iris forest boosting] [--rows 1 100]
                                    [--oip after|only|off]

Models (trained into a temporary BentoML home with `training train`):
  iris      the iris LogisticRegression pipeline (a cheap call: the single-row path shows)
  forest    RandomForest(100 trees) on make_classification(20000, 20 features, random_state=0)
  boosting  HistGradientBoosting on the same data
Servers, started one at a time, each alone on the machine, 1 worker:
  ours       the built bento, as ops run it (`training build`, then `bentoml serve prediction:V`)
  idiomatic  a plain @bentoml.service with one @bentoml.api predict on a numpy array
  batchable  the same with @bentoml.api(batchable=True): BentoML's own adaptive batching
  mlflow     `mlflow models serve` (MLflow 3.17, 1 worker) of the same fitted pipeline, in a venv
             of its own with our scikit-learn and numpy (made once, under ~/.cache/training)
  echo       a bare Starlette app under uvicorn that parses the JSON body and echoes it
wrk (POST, keep-alive) drives each at each concurrency with 1-row and 100-row bodies. Printed:
requests/s, p50, p99, errors, CPU per request (server and children), rows per model call
(ours: from its metrics), RSS after the run, the median time from start to the first answer
(of 3 starts) and the idle worker's RSS; then the ratios and the issue's floors. Then
(``--oip after``, the default; ``only`` runs it alone) the Open Inference Protocol section of
bench/serve_oip.py: OIP infer beside /predict on one server, JSON and binary, 1 and 100 rows,
c8 and c32. Needs `wrk` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

import serve_oip
from common import (
    BIN,
    free_port,
    largest_rss_mb,
    sample_rows,
    stop,
    train_model,
    tree_cpu_s,
    tree_rss_mb,
    wrk,
)

IDIOMATIC = """
import bentoml
import numpy as np


@bentoml.service
class Idiomatic:
    model_ref = bentoml.models.BentoModel("{tag}")

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)

    @bentoml.api{batching}
    def predict(self, input: np.ndarray) -> np.ndarray:
        return self.model.predict(input)
"""
BATCHING = "(batchable=True, max_batch_size=256, max_latency_ms=1000)"

ECHO = """
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def echo(request: Request) -> JSONResponse:
    return JSONResponse(await request.json())


app = Starlette(routes=[Route("/predict", echo, methods=["POST"])])
"""
TRAINING = {
    "iris": ["--dataset", "iris", "--model", "logistic_regression"],
    "forest": ["--target", "label", "--model", "random_forest", "--param", "n_estimators=100"],
    "boosting": ["--target", "label", "--model", "hist_gradient_boosting"],
}


@dataclass
class Result:
    server: str
    model: str
    rows: int
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float
    batch_rows: float | None
    rss_mb: float
    idle_rss_mb: float
    idle_worker_mb: float
    start_s: float


def _train(model: str, work: Path, env: dict[str, str]) -> str:
    args = list(TRAINING[model])
    if model != "iris":
        csv = work / "classification.csv"
        if not csv.exists():
            import pandas as pd
            from sklearn.datasets import make_classification

            X, y = make_classification(20000, n_features=20, random_state=0)
            frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(20)])
            frame["label"] = y
            frame.to_csv(csv, index=False)
        args = ["--dataset", str(csv), *args]
    return train_model(env, *args)


def _bodies(tag: str, work: Path, env: dict[str, str], rows: list[int]) -> dict[str, Path]:
    """Request bodies: ours (rows keyed by feature), idiomatic (a plain array) and MLflow's
    (the same array as its "inputs")."""
    sample = sample_rows(tag, env, max(rows))
    paths: dict[str, Path] = {}
    for n in rows:
        stem = tag.replace(":", "-")
        matrix = [list(r.values()) for r in sample[:n]]
        for kind, body in (
            ("ours", {"instances": sample[:n]}),
            ("plain", {"input": matrix}),
            ("mlflow", {"inputs": matrix}),
        ):
            paths[f"{kind}-{n}"] = work / f"{stem}-{kind}-{n}.json"
            paths[f"{kind}-{n}"].write_text(json.dumps(body))
    return paths


def _batch_rows(url: str) -> tuple[float, float]:
    """Sum and count of ours' rows-per-model-call histogram."""
    total = count = 0.0
    for line in httpx.get(url.replace("/predict", "/metrics"), timeout=10).text.splitlines():
        if line.startswith("prediction_batch_rows_sum{"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("prediction_batch_rows_count{"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def _start(
    command: list[str], env: dict[str, str], work: Path, body: Path, log: Path, path: str
) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        [part.format(port=port) for part in command],
        env=env,
        cwd=work,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}{path}"
    while time.monotonic() - started < 120:
        if proc.poll() is not None:
            raise RuntimeError(f"{command[:3]} exited with {proc.returncode}; see {log}")
        try:
            answer = httpx.post(
                url,
                content=body.read_bytes(),
                headers={"content-type": "application/json"},
                timeout=5,
            )
            if answer.status_code == 200:
                return proc, url, time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after 120 s")


def _cells(
    server: str,
    model: str,
    command: list[str],
    paths: dict[str, Path],
    args: argparse.Namespace,
    work: Path,
    env: dict[str, str],
) -> list[Result]:
    kind = {"ours": "ours", "echo": "ours", "mlflow": "mlflow"}.get(server, "plain")
    path = "/invocations" if server == "mlflow" else "/predict"
    log = work / f"{server}.log"
    # Start to first answer: the median of three starts (one start alone varied 3.0-4.7 s
    # for the same forest bento, as the page cache and the other core allowed).
    starts = []
    for _ in range(STARTS - 1):
        proc, url, start_s = _start(command, env, work, paths[f"{kind}-1"], log, path)
        stop(proc)
        starts.append(start_s)
    proc, url, start_s = _start(command, env, work, paths[f"{kind}-1"], log, path)
    start_s = statistics.median([*starts, start_s])
    time.sleep(1)
    idle = tree_rss_mb(proc.pid)  # after one answer, before any load
    idle_worker = largest_rss_mb(proc.pid)
    results: list[Result] = []
    try:
        for rows in args.rows:
            body = paths[f"{kind}-{rows}"]
            wrk(url, body, 8, 2, work)  # warm-up
            for concurrency in args.concurrency:
                before_cpu = tree_cpu_s(proc.pid)
                before_rows = _batch_rows(url) if server == "ours" else (0.0, 0.0)
                rps, p50, p99, errors = wrk(url, body, concurrency, args.duration, work)
                cpu = tree_cpu_s(proc.pid) - before_cpu
                batch = None
                if server == "ours":
                    after = _batch_rows(url)
                    calls = after[1] - before_rows[1]
                    batch = (after[0] - before_rows[0]) / calls if calls else None
                requests = max(1.0, rps * args.duration)
                results.append(
                    Result(
                        server,
                        model,
                        rows,
                        concurrency,
                        rps,
                        p50,
                        p99,
                        errors,
                        cpu / requests * 1000,
                        batch,
                        tree_rss_mb(proc.pid),
                        idle,
                        idle_worker,
                        start_s,
                    )
                )
                print(
                    f"  {server:9} {model:8} rows={rows:<3} c={concurrency:<2} {rps:7.0f} req/s",
                    file=sys.stderr,
                )
    finally:
        stop(proc)
    return results


def _report(results: list[Result], args: argparse.Namespace) -> None:
    print(f"\nwrk {args.duration} s per cell; servers started one at a time, 1 worker each\n")
    head = (
        "server",
        "model",
        "rows",
        "conc",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "CPU ms/req",
        "rows/call",
        "RSS MB",
        "start s",
    )
    print("{:10} {:8} {:>4} {:>4} {:>7} {:>8} {:>8} {:>6} {:>10} {:>9} {:>6} {:>7}".format(*head))
    for r in results:
        batch = f"{r.batch_rows:9.1f}" if r.batch_rows is not None else f"{'-':>9}"
        print(
            f"{r.server:10} {r.model:8} {r.rows:4} {r.concurrency:4} {r.rps:7.0f} "
            f"{r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:6} {r.cpu_ms:10.2f} {batch} "
            f"{r.rss_mb:6.0f} {r.start_s:7.2f}"
        )
    cell = {(r.server, r.model, r.rows, r.concurrency): r for r in results}
    print(
        f"\n{'model':8} {'rows':>4} {'conc':>4} {'ours/idiomatic':>15} {'ours/batchable':>15} "
        f"{'ours/mlflow':>12} {'ours/echo':>10}"
    )
    for model in args.models:
        for rows in args.rows:
            for c in args.concurrency:
                ours = cell.get(("ours", model, rows, c))
                if ours is None:
                    continue
                ratios = []
                peers = (
                    ("idiomatic", model),
                    ("batchable", model),
                    ("mlflow", model),
                    ("echo", "-"),
                )
                for peer in peers:
                    other = cell.get((*peer, rows, c))
                    ratios.append(f"{ours.rps / other.rps:.2f}x" if other else "-")
                print(
                    f"{model:8} {rows:4} {c:4} {ratios[0]:>15} {ratios[1]:>15} {ratios[2]:>12} "
                    f"{ratios[3]:>10}"
                )
    _floors(cell, results, args)


def _floors(
    cell: dict[tuple[str, str, int, int], Result], results: list[Result], args: argparse.Namespace
) -> None:
    top = max(args.concurrency)
    print("\nfloors (issue 11):")
    forest, batchable = (
        cell.get(("ours", "forest", 1, top)),
        cell.get(("batchable", "forest", 1, top)),
    )
    if forest and batchable:
        print(
            f"  forest 1 row c{top}: {forest.rps / batchable.rps:.2f}x BentoML batchable "
            f"(>= 1.5x), p99 {forest.p99_ms:.0f} ms (<= 150), errors {forest.errors}"
        )
    iris, idiomatic = cell.get(("ours", "iris", 1, top)), cell.get(("idiomatic", "iris", 1, top))
    mlflow = cell.get(("mlflow", "iris", 1, top))
    if iris and idiomatic:
        versus = f", {iris.rps / mlflow.rps:.2f}x MLflow (>= 2.5x)" if mlflow else ""
        print(
            f"  iris 1 row c{top}: {iris.rps / idiomatic.rps:.2f}x idiomatic (>= 4.5x){versus}, "
            f"p99 {iris.p99_ms:.1f} ms (<= 25)"
        )
    quiet = cell.get(("ours", "iris", 1, min(args.concurrency)))
    if quiet:
        print(f"  iris 1 row c{min(args.concurrency)}: p50 {quiet.p50_ms:.2f} ms (no waiting)")
    ours = [r for r in results if r.server == "ours"]
    if ours:
        firsts = [
            r for r in results if r.rows == args.rows[0] and r.concurrency == args.concurrency[0]
        ]
        print(
            f"  idle RSS of the worker (<= 300 MB; the whole tree beside it) and start to the "
            f"first answer (<= 3.5 s, median of {STARTS}):"
        )
        for r in firsts:
            print(
                f"    {r.server:9} {r.model:8} worker {r.idle_worker_mb:4.0f} MB "
                f"(tree {r.idle_rss_mb:4.0f} MB) {r.start_s:6.2f} s"
            )


SERVERS = ["ours", "idiomatic", "batchable", "mlflow", "echo"]
STARTS = 3  # starts of each server, to the first answer: the median is printed
MLFLOW = "mlflow==3.17.*"


def _built_bento(tag: str, work: Path, env: dict[str, str]) -> str:
    """`training build` of the model: ours is measured as ops run it, `bentoml serve
    prediction:VERSION`."""
    out = subprocess.run(
        [str(BIN / "training"), "build", "--model-tag", tag, "--out", str(work / "bentos")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("bento "))


def _mlflow_venv() -> Path:
    """A venv with MLflow beside our own scikit-learn, numpy and pandas (the pickled pipeline
    loads only with the scikit-learn that fitted it); made once, then reused."""
    import numpy
    import pandas
    import sklearn

    pins = [MLFLOW, f"scikit-learn=={sklearn.__version__}", f"numpy=={numpy.__version__}"]
    pins.append(f"pandas=={pandas.__version__}")
    venv = Path.home() / ".cache" / "training" / "bench-mlflow"
    marker = venv / "pins.txt"
    if not marker.is_file() or marker.read_text() != "\n".join(pins):
        print(f"making MLflow's venv in {venv} ...", file=sys.stderr)
        subprocess.run([str(BIN / "uv"), "venv", "-q", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(BIN / "uv"), "pip", "install", "-q", "--python", str(venv / "bin/python"), *pins],
            check=True,
        )
        marker.write_text("\n".join(pins))
    return venv


def _mlflow_model(tag: str, work: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """MLflow's venv and the same fitted pipeline saved as an MLflow model."""
    venv = _mlflow_venv()
    name, version = tag.split(":")
    pickled = Path(env["BENTOML_HOME"]) / "models" / name / version / "saved_model.pkl"
    target = work / f"mlflow-{version}"
    if not target.exists():
        code = "import joblib, sys, mlflow.sklearn\n"
        # MLflow 3.17's default format (skops) refuses the numpy dtypes a pipeline holds.
        code += "mlflow.sklearn.save_model(joblib.load(sys.argv[1]), sys.argv[2], "
        code += "serialization_format='cloudpickle')\n"
        subprocess.run(
            [str(venv / "bin/python"), "-c", code, str(pickled), str(target)],
            check=True,
            capture_output=True,
        )
    return venv, target


def _command(server: str, tag: str, work: Path, env: dict[str, str]) -> list[str]:
    """How ``server`` is started for model ``tag`` (``{port}`` stands for its port)."""
    if server == "ours":
        bento = _built_bento(tag, work, env)
        return [str(BIN / "bentoml"), "serve", bento, "--port", "{port}"]
    if server == "mlflow":
        venv, model = _mlflow_model(tag, work, env)
        # MLflow starts `uvicorn` by name: its venv's bin goes first on the PATH.
        path = f"PATH={venv / 'bin'}:{os.environ.get('PATH', '')}"
        serve = ["env", path, str(venv / "bin/mlflow"), "models", "serve", "-m", str(model)]
        return [*serve, "--env-manager", "local", "-h", "127.0.0.1", "-p", "{port}", "-w", "1"]
    batching = BATCHING if server == "batchable" else ""
    (work / f"{server}.py").write_text(IDIOMATIC.format(tag=tag, batching=batching))
    serve = [str(BIN / "bentoml"), "serve", f"{server}:Idiomatic", "--working-dir", str(work)]
    return [*serve, "--port", "{port}"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--models", nargs="+", default=list(TRAINING), choices=list(TRAINING))
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100])
    parser.add_argument(
        "--servers",
        nargs="+",
        default=SERVERS,
        choices=SERVERS,
    )
    parser.add_argument(
        "--oip",
        choices=["after", "only", "off"],
        default="after",
        help="the Open Inference Protocol section (bench/serve_oip.py): after, alone or not",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/serve.py needs wrk: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    env = {
        **os.environ,
        "BENTOML_HOME": str(work / "bentoml"),
        "DATA_DIR": str(work / "data"),
        "BENTOML_DO_NOT_TRACK": "true",
        "SERVICE_WORKERS": "1",
    }
    env.pop("DATABASE_URL", None)
    if args.oip == "only":
        serve_oip.run(args, work, env)
        return
    (work / "echo.py").write_text(ECHO)
    results: list[Result] = []
    for model in args.models:
        print(f"training {model} in {work} ...", file=sys.stderr)
        tag = _train(model, work, env)
        paths = _bodies(tag, work, env, args.rows)
        for server in args.servers:
            if server != "echo":
                command = _command(server, tag, work, env)
                results += _cells(server, model, command, paths, args, work, env)
        if "echo" in args.servers and not any(r.server == "echo" for r in results):
            command = [
                str(BIN / "uvicorn"),
                "echo:app",
                "--app-dir",
                str(work),
                "--port",
                "{port}",
                "--log-level",
                "warning",
            ]
            results += [
                Result(**{**r.__dict__, "model": "-"})
                for r in _cells("echo", model, command, paths, args, work, env)
            ]
    _report(results, args)
    if args.oip == "after":
        serve_oip.run(args, work, env)


if __name__ == "__main__":
    main()

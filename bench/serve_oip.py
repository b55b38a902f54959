"""bench/serve.py's Open Inference Protocol section: OIP infer beside native /predict on one
server, the same model and the same rows, for JSON and for Triton's binary tensor extension.

    .venv/bin/python bench/serve.py --oip only [--duration 10] [--rows 1 100]

One `bentoml serve` of src/service.py (iris, 1 worker) takes, in turn, at c8 and c32 and for
each row count: native ``/predict`` (``{"instances": [...]}``), OIP JSON (one tensor per
feature, as the model metadata lists them, ``predict`` asked for as JSON), OIP binary (the same
tensors as raw FP64 after the JSON header, ``predict`` back as binary data: tritonclient's
default) and OIP binary with one [N, 4] tensor. Bodies are prepared once (the binary ones by
tritonclient's own request writer) and sent by wrk, keep-alive; every kind's answer is checked
against /predict's before it is timed. Each cell's time is cut into slices taken in turn across
the kinds, so the ratios hold on a machine others share. Printed: req/s, p50, p99 (median of
the slices'), errors, CPU per request, and each OIP kind's req/s over /predict's in the same
cell (floor 0.8x).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.http as triton

from common import (
    free_port,
    sample_rows,
    service_command,
    stop,
    train_model,
    tree_cpu_s,
    wait_until_ready,
    wrk,
)

CONCURRENCY = (8, 32)
ROUNDS = 4  # slices per cell, taken in turn across the kinds
FLOOR = 0.8
KINDS = ("/predict", "oip json", "oip binary", "oip binary [N,F]")


@dataclass
class Cell:
    kind: str
    rows: int
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float


@dataclass
class Body:
    path: str  # URL path
    file: Path
    headers: dict[str, str]


def _bodies(tag: str, rows: list[dict[str, Any]], work: Path) -> dict[str, Body]:
    """The four kinds' bodies for these rows, written to files for wrk."""
    name, n = tag.partition(":")[0], len(rows)
    infer = f"/v2/models/{name}/infer"
    names = list(rows[0])
    X = np.array([[row[f] for f in names] for row in rows], dtype=np.float64)
    columns = {
        "inputs": [
            {"name": f, "shape": [n], "datatype": "FP64", "data": X[:, j].tolist()}
            for j, f in enumerate(names)
        ],
        "outputs": [{"name": "predict", "parameters": {"binary_data": False}}],
    }
    made = {
        "/predict": (b"/predict", json.dumps({"instances": rows}).encode(), None),
        "oip json": (infer.encode(), json.dumps(columns).encode(), None),
    }
    wanted = [triton.InferRequestedOutput("predict", binary_data=True)]
    for kind, inputs in (
        ("oip binary", [_tensor(f, X[:, j].copy()) for j, f in enumerate(names)]),
        ("oip binary [N,F]", [_tensor("x", X)]),
    ):
        body, size = triton.InferenceServerClient.generate_request_body(inputs, outputs=wanted)
        made[kind] = (infer.encode(), body, size)
    bodies = {}
    for kind, (path, content, size) in made.items():
        file = work / f"oip-{kind.replace(' ', '-').replace('/', '').replace(',', '')}-{n}.body"
        file.write_bytes(content)
        headers = {} if size is None else {"Inference-Header-Content-Length": str(size)}
        bodies[kind] = Body(path.decode(), file, headers)
    return bodies


def _tensor(name: str, array: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), "FP64")
    tensor.set_data_from_numpy(array, binary_data=True)
    return tensor


def _labels(base: str, body: Body) -> list[Any]:
    """What one request of this body answers: its labels (checked before any timing)."""
    headers = {"content-type": "application/json", **body.headers}
    answer = httpx.post(base + body.path, content=body.file.read_bytes(), headers=headers)
    assert answer.status_code == 200, answer.text
    if body.path == "/predict":
        return list(answer.json()["predictions"])
    size = answer.headers.get("inference-header-content-length")
    result = triton.InferResult.from_response_body(
        answer.content, header_length=int(size) if size else None
    )
    return [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict")]


def run(args: argparse.Namespace, work: Path, env: dict[str, str]) -> list[Cell]:
    """Train iris, serve it once, time every kind at c8 and c32; print the section."""
    print("oip: training iris ...", file=sys.stderr)
    tag = train_model(env)
    sample = sample_rows(tag, env, max(args.rows))
    port = free_port()
    log = (work / "oip-serve.log").open("wb")
    proc = subprocess.Popen(
        service_command(tag, port), env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    cells: list[Cell] = []
    try:
        wait_until_ready(f"{base}/readyz", proc)
        for rows in args.rows:
            bodies = _bodies(tag, sample[:rows], work)
            expected = _labels(base, bodies["/predict"])
            for kind, body in bodies.items():
                assert _labels(base, body) == expected, kind
                wrk(base + body.path, body.file, 8, 2, work, body.headers)  # warm-up
            for concurrency in CONCURRENCY:
                cells += _cells(proc.pid, base, rows, concurrency, bodies, args, work)
    finally:
        stop(proc)
        log.close()
    _report(cells, args)
    return cells


def _cells(
    pid: int,
    base: str,
    rows: int,
    concurrency: int,
    bodies: dict[str, Body],
    args: argparse.Namespace,
    work: Path,
) -> list[Cell]:
    """Each kind's figures in one cell, its time cut into ROUNDS slices taken in turn with
    the other kinds', so a change in what else runs on the machine falls on all of them alike.
    req/s over the whole time; p50 and p99 the median of the slices'."""
    slice_s = max(1, round(args.duration / ROUNDS))
    runs: dict[str, list[tuple[float, float, float, int, float]]] = {k: [] for k in bodies}
    for _ in range(ROUNDS):
        for kind, body in bodies.items():
            before = tree_cpu_s(pid)
            rps, p50, p99, errors = wrk(
                base + body.path, body.file, concurrency, slice_s, work, body.headers
            )
            runs[kind].append((rps, p50, p99, errors, tree_cpu_s(pid) - before))
    cells = []
    for kind, slices in runs.items():
        rps = statistics.fmean(r[0] for r in slices)
        cpu_ms = sum(r[4] for r in slices) / max(1.0, rps * slice_s * ROUNDS) * 1000
        p50, p99 = (statistics.median(r[i] for r in slices) for i in (1, 2))
        errors = sum(r[3] for r in slices)
        cells.append(Cell(kind, rows, concurrency, rps, p50, p99, errors, cpu_ms))
        print(
            f"  oip {kind:18} rows={rows:<3} c={concurrency:<2} {rps:7.0f} req/s", file=sys.stderr
        )
    return cells


def _report(cells: list[Cell], args: argparse.Namespace) -> None:
    print(
        f"\nOpen Inference Protocol beside /predict: one server (iris, 1 worker), wrk "
        f"{args.duration} s per cell\n"
    )
    head = (
        "rows",
        "conc",
        "kind",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "CPU ms/req",
        "vs /predict",
    )
    print("{:>4} {:>4} {:18} {:>7} {:>8} {:>8} {:>6} {:>10} {:>11}".format(*head))
    native = {(c.rows, c.concurrency): c for c in cells if c.kind == "/predict"}
    low = []
    for c in cells:
        ratio = c.rps / native[(c.rows, c.concurrency)].rps
        if c.kind != "/predict" and ratio < FLOOR:
            low.append(f"{c.kind} rows={c.rows} c{c.concurrency} {ratio:.2f}x")
        print(
            f"{c.rows:4} {c.concurrency:4} {c.kind:18} {c.rps:7.0f} {c.p50_ms:8.2f} "
            f"{c.p99_ms:8.2f} {c.errors:6} {c.cpu_ms:10.2f} {ratio:10.2f}x"
        )
    verdict = "met in every cell" if not low else "NOT met: " + "; ".join(low)
    print(f"\nfloor (issue 15): OIP infer >= {FLOOR}x native /predict req/s: {verdict}")

"""Serving benchmark: this service vs an idiomatic BentoML service vs a bare echo, side by side.

    .venv/bin/python bench/serve.py [--duration 10] [--concurrency 1 8 32]

One run trains the iris LogisticRegression pipeline into a temporary BentoML home, then starts
in turn, each alone on the machine:
  ours       src/service.py as shipped (`bentoml serve service:Prediction`, default settings)
  idiomatic  a plain @bentoml.service class with one @bentoml.api predict on a numpy array,
             BentoML's defaults (what a tutorial would write)
  echo       a bare Starlette app under uvicorn that parses the JSON body and echoes it (the
             HTTP floor: no model, no framework)
and drives each with wrk (POST, keep-alive) at each concurrency, with 1-row and 100-row
bodies. Prints requests/s, p50, p99, errors and the server's RSS, then the ratios.
Needs `wrk` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from common import (
    BIN,
    IRIS_ROW,
    bench_setup,
    free_port,
    service_command,
    stop,
    tree_rss_mb,
    wait_ready,
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

    @bentoml.api
    def predict(self, input: np.ndarray) -> np.ndarray:
        return self.model.predict(input)
"""

ECHO = """
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def echo(request: Request) -> JSONResponse:
    return JSONResponse(await request.json())


app = Starlette(routes=[Route("/predict", echo, methods=["POST"])])
"""


@dataclass
class Result:
    server: str
    rows: int
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_mb: float


def main() -> None:
    args, work, env, tag = bench_setup("serve", __doc__ or "")
    (work / "idiomatic.py").write_text(IDIOMATIC.format(tag=tag))
    (work / "echo.py").write_text(ECHO)

    bodies: dict[str, dict[int, Path]] = {"ours": {}, "idiomatic": {}, "echo": {}}
    for rows in (1, 100):
        ours = work / f"ours-{rows}.json"
        ours.write_text(json.dumps({"instances": [IRIS_ROW] * rows}))
        idiomatic = work / f"idiomatic-{rows}.json"
        idiomatic.write_text(json.dumps({"input": [list(IRIS_ROW.values())] * rows}))
        bodies["ours"][rows] = bodies["echo"][rows] = ours
        bodies["idiomatic"][rows] = idiomatic

    servers = {
        "ours": (
            service_command(tag, "{port}"),
            {"ACCESS_LOG": "true"},
        ),
        "idiomatic": (
            [
                str(BIN / "bentoml"),
                "serve",
                "idiomatic:Idiomatic",
                "--working-dir",
                str(work),
                "--port",
                "{port}",
            ],
            {},
        ),
        "echo": (
            [
                str(BIN / "uvicorn"),
                "echo:app",
                "--app-dir",
                str(work),
                "--port",
                "{port}",
                "--log-level",
                "warning",
            ],
            {},
        ),
    }
    results: list[Result] = []
    for name, (command, extra_env) in servers.items():
        port = free_port()
        log = (work / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [part.format(port=port) for part in command],
            env={**env, **extra_env},
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/predict"
        try:
            wait_ready(url, bodies[name][1].read_bytes(), proc)
            for rows in (1, 100):
                wrk(url, bodies[name][rows], 8, 2, work)  # warm-up
                for concurrency in args.concurrency:
                    rps, p50, p99, errors = wrk(
                        url, bodies[name][rows], concurrency, args.duration, work
                    )
                    result = Result(
                        name, rows, concurrency, rps, p50, p99, errors, tree_rss_mb(proc.pid)
                    )
                    results.append(result)
                    print(
                        f"  {name:9} rows={rows:<3} c={concurrency:<2} {rps:8.0f} req/s",
                        file=sys.stderr,
                    )
        finally:
            stop(proc)
            log.close()

    print(f"\nmodel {tag}; wrk {args.duration} s per cell; servers started one at a time\n")
    head = ("server", "rows", "conc", "req/s", "p50 ms", "p99 ms", "errors", "RSS MB")
    print("{:10} {:>4} {:>4} {:>9} {:>8} {:>8} {:>6} {:>7}".format(*head))
    for r in results:
        cells = (r.server, r.rows, r.concurrency, r.rps, r.p50_ms, r.p99_ms, r.errors, r.rss_mb)
        print("{:10} {:4} {:4} {:9.0f} {:8.2f} {:8.2f} {:6} {:7.0f}".format(*cells))
    by_key = {(r.server, r.rows, r.concurrency): r for r in results}
    print(f"\n{'rows':>4} {'conc':>4} {'ours/idiomatic':>15} {'ours/echo':>10}")
    for rows in (1, 100):
        for concurrency in args.concurrency:
            ours = by_key[("ours", rows, concurrency)]
            idiomatic = by_key[("idiomatic", rows, concurrency)]
            echo = by_key[("echo", rows, concurrency)]
            versus_idiomatic, versus_echo = ours.rps / idiomatic.rps, ours.rps / echo.rps
            print(f"{rows:4} {concurrency:4} {versus_idiomatic:14.2f}x {versus_echo:9.2f}x")
    floor = (
        by_key[("ours", 1, max(args.concurrency))].rps
        / by_key[("idiomatic", 1, max(args.concurrency))].rps
    )
    errors = sum(r.errors for r in results if r.server == "ours")
    print(
        f"\nfloor (issue 3): single-row req/s at c={max(args.concurrency)} >= 2x idiomatic: "
        f"{floor:.2f}x; errors in ours: {errors}"
    )


if __name__ == "__main__":
    main()

"""Run-store scale benchmark: 100,000 runs (5 params, 5 metrics each), then `runs list` pages.

    .venv/bin/python bench/runstore.py [--runs 100000] [--url DATABASE_URL] [--repeat 20]

Prints the fill time and, per query, the median and worst time of the first page of 50 (the
store call that `training runs list` and `GET /runs` make), and the whole CLI command once.
Floor (issue 2): a metric filter + metric order, first page of 50, under 100 ms on SQLite.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from training.store import revision
from training.store.db import Database
from training.store.runs import RunStore
from training.store.search import RunSearch
from training.store.tables import Experiment, LatestMetric, Metric, Param, Run

METRICS = ("accuracy", "f1_macro", "roc_auc", "log_loss", "balanced_accuracy")
PARAMS = ("C", "max_iter", "penalty", "solver", "seed")
BATCH = 5_000
QUERIES = {
    "metric filter + same metric order": ("metrics.accuracy > 0.9", "metrics.accuracy desc"),
    "metric filter + other metric order": ("metrics.accuracy > 0.9", "metrics.roc_auc desc"),
    "tight filter + other metric order": ("metrics.accuracy > 0.999", "metrics.roc_auc desc"),
    "newest first, no filter": (None, None),
    "param filter, newest first": ("params.solver = 'saga'", None),
    "status + metric order": ("status = FINISHED", "metrics.log_loss asc"),
}


def fill(db: Database, n: int) -> float:
    rng = random.Random(7)
    start = time.perf_counter()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with db.write() as session:
        session.add(Experiment(id=1, name="bench", created_at=t0))
    for base in range(0, n, BATCH):
        runs, params, metrics, latest = [], [], [], []
        for i in range(base, min(base + BATCH, n)):
            run_id = uuid.UUID(int=rng.getrandbits(128)).hex
            when = t0 + timedelta(seconds=i)
            runs.append(
                {
                    "id": run_id,
                    "experiment_id": 1,
                    "status": "FINISHED" if i % 10 else "FAILED",
                    "submitted_at": when,
                    "start_time": when,
                    "end_time": when + timedelta(seconds=3),
                    "model_name": "logistic_regression",
                    "task": "classification",
                    "dataset_name": "iris",
                }
            )
            for key in PARAMS:
                params.append(
                    {
                        "run_id": run_id,
                        "key": key,
                        "value": rng.choice(["lbfgs", "saga", "1.0", "100"]),
                    }
                )
            for key in METRICS:
                value = rng.random()
                metrics.append(
                    {"run_id": run_id, "key": key, "step": 0, "value": value, "timestamp": when}
                )
                latest.append({"run_id": run_id, "key": key, "step": 0, "value": value})
        with db.write() as session:
            session.execute(insert(Run), runs)
            session.execute(insert(Param), params)
            session.execute(insert(Metric), metrics)
            session.execute(insert(LatestMetric), latest)
        print(
            f"\rfilled {min(base + BATCH, n):,} / {n:,} runs", end="", file=sys.stderr, flush=True
        )
    print(file=sys.stderr)
    if db.is_sqlite:
        with db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--url", help="run-store URL (default: a new SQLite file)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-runstore-"))
    url = args.url or f"sqlite:///{folder / 'sql_app.db'}"
    db = Database(url)
    revision.upgrade(db)
    fill_s = fill(db, args.runs)
    print(f"store: {db.engine.url.render_as_string(hide_password=True)}")
    print(f"filled {args.runs:,} runs (5 params, 5 metrics each) in {fill_s:.1f} s")
    store = RunStore(db)
    print(f"\n{'query (first page of 50)':40} {'median ms':>10} {'max ms':>8} {'rows':>5}")
    medians: dict[str, float] = {}
    for label, (filter_text, order) in QUERIES.items():
        search = RunSearch.parse(filter_text, order)
        store.search(search, limit=50)  # warm the page cache once, as a running server would be
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            page = store.search(search, limit=50)
            times.append((time.perf_counter() - t) * 1000)
        medians[label] = statistics.median(times)
        print(f"{label:40} {medians[label]:10.1f} {max(times):8.1f} {len(page.runs):5}")
    search = RunSearch.parse(*QUERIES["metric filter + same metric order"])
    token = store.search(search, limit=50).next_page_token
    t = time.perf_counter()
    store.search(search, limit=50, page_token=token)
    print(f"{'  its second page (keyset token)':40} {(time.perf_counter() - t) * 1000:10.1f}")
    if not args.url:
        env = {**os.environ, "DATABASE_URL": url, "BENTOML_DO_NOT_TRACK": "true"}
        cmd = [
            str(Path(sys.executable).with_name("training")),
            "runs",
            "list",
            "--filter",
            "metrics.accuracy > 0.9",
            "--order-by",
            "metrics.accuracy desc",
            "--limit",
            "50",
            "--json",
        ]
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        elapsed = time.perf_counter() - t
        print(f"\nwhole `training runs list` command (process start included): {elapsed:.2f} s")
    figure = medians["metric filter + same metric order"]
    verdict = "within" if figure < 100 else "OVER"
    print(
        f"\nmetric filter + order, first page of 50: {figure:.1f} ms, {verdict} the 100 ms floor "
        f"({100 / figure:.0f}x headroom)"
    )


if __name__ == "__main__":
    main()

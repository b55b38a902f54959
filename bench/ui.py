"""Dashboard benchmark: its pages over a store of 100,000 runs, beside the API's same queries.

    .venv/bin/python bench/ui.py [--runs 100000] [--repeat 20] [--no-browser]

Fills a new SQLite run store (bench/runstore.py's fill: 5 params, 5 metrics per run), gives
the finished runs a model version each and one run the largest artefacts a run records (10
classes: a 10x10 matrix, 10 ROC curves of 200 points, 50 importances, 5 folds), starts
`training serve` on it with keys required, logs in with an admin key, and times each page from
request to its last byte (median and worst of --repeat), next to GET /runs for the same search
(the JSON the API sends: what the page adds is rendering). With Chromium and Playwright
present, it also times the runs page in the browser, from navigation to the load event.
Floor (issue 16): the runs page's first page renders in under 1 s at 100,000 runs.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, select

from runstore import fill
from training.ops.keys import KeyRing
from training.store import revision
from training.store.db import Database
from training.store.records import ConfusionMatrix, Evaluation, Importance, RocCurve
from training.store.tables import Metric, ModelVersion, Run, RunEvaluation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import browser_reason, launch_chromium, serve_training

FLOOR_S = 1.0
METRICS = ("accuracy", "f1_macro", "roc_auc", "log_loss", "balanced_accuracy")


def _largest_evaluation() -> Evaluation:
    labels = [f"class_{i}" for i in range(10)]
    grid = [i / 199 for i in range(200)]
    return Evaluation(
        rows=360,
        confusion=ConfusionMatrix(
            labels=labels, counts=[[30 if i == j else 1 for j in range(10)] for i in range(10)]
        ),
        roc=[
            RocCurve(label=label, fpr=grid, tpr=[min(1.0, x * 3) for x in grid], auc=0.9)
            for label in labels
        ],
        importances=[Importance(feature=f"pixel_{i}", value=1 / (i + 1)) for i in range(50)],
        importance_kind="impurity",
    )


def prepare(db: Database) -> tuple[str, list[str]]:
    """Model versions for the finished runs, the largest artefacts and folds for one: that
    run's id and five runs to compare."""
    with db.read() as session:
        finished = list(session.scalars(select(Run.id).where(Run.status == "FINISHED")))
    now = datetime.now(UTC)
    for start in range(0, len(finished), 10_000):
        rows = [
            {
                "tag": f"bench-model:{run_id}",
                "run_id": run_id,
                "name": "bench-model",
                "created_at": now,
            }
            for run_id in finished[start : start + 10_000]
        ]
        with db.write() as session:
            session.execute(insert(ModelVersion), rows)
    shown = finished[-1]
    folds = [
        {"run_id": shown, "key": f"cv_fold_{key}", "step": step, "value": 0.9, "timestamp": now}
        for key in METRICS
        for step in range(1, 6)
    ]
    with db.write() as session:
        session.execute(insert(Metric), folds)
        data = _largest_evaluation().model_dump(mode="json")
        session.add(RunEvaluation(run_id=shown, data=data))
    return shown, finished[:5]


def log_in(base: str, key: str) -> str:
    """The session cookie after the login form (sent by hand: over plain http to loopback an
    HTTP client would not send a Secure cookie back, a browser does)."""
    form = httpx.get(f"{base}/ui/login")
    anonymous = form.cookies["training_ui"]
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf, form.text[:500]
    answer = httpx.post(
        f"{base}/ui/login",
        data={"csrf": csrf.group(1), "key": key, "next": "/"},
        headers={"Cookie": f"training_ui={anonymous}"},
    )
    assert answer.status_code == 303, answer.text[:500]
    return str(answer.cookies["training_ui"])


def timed(client: httpx.Client, url: str, repeat: int, **kwargs: Any) -> tuple[float, float, int]:
    """(median ms, worst ms, bytes) of full answers, after one to warm up."""
    client.get(url, **kwargs).raise_for_status()
    samples, size = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(url, **kwargs)
        samples.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
        size = len(answer.content)
    return statistics.median(samples), max(samples), size


def in_browser(base: str, cookie: str, repeat: int) -> list[float] | None:
    """Navigation to the load event of the runs page in Chromium, ms; None without one."""
    if browser_reason() is not None:
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context()
        context.add_cookies(
            [
                {
                    "name": "training_ui",
                    "value": cookie,
                    "url": f"{base}/ui/",
                    "secure": True,
                    "httpOnly": True,
                    "sameSite": "Strict",
                }
            ]
        )
        page = context.new_page()
        page.goto(f"{base}/ui/")  # warm: the static files are cached from here on
        times = []
        for _ in range(repeat):
            page.goto(f"{base}/ui/", wait_until="load")
            assert page.locator("#runs tr[data-run]").count() == 50
            timing = page.evaluate(
                "() => performance.getEntriesByType('navigation')[0].loadEventEnd"
            )
            times.append(float(timing))
        browser.close()
    return times


Timing = tuple[float, float, int]
SEARCHES: dict[str, dict[str, str]] = {
    "newest first": {},
    "metric filter + order": {
        "filter": "metrics.accuracy > 0.9",
        "order_by": "metrics.accuracy desc",
    },
    "param filter": {"filter": "params.solver = 'saga'"},
}


def measure(
    base: str, cookie: str, key: str, shown: str, five: list[str], repeat: int
) -> list[tuple[str, Timing, Timing | None]]:
    """Each page (and, where there is one, the API's answer for the same thing)."""
    page = {"headers": {"Cookie": f"training_ui={cookie}"}}
    api = {"headers": {"Authorization": f"Bearer {key}"}}
    rows: list[tuple[str, Timing, Timing | None]] = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for label, params in SEARCHES.items():
            ui = timed(client, "/ui/", repeat, params=params, **page)
            rows.append(
                (f"runs page, {label}", ui, timed(client, "/runs", repeat, params=params, **api))
            )
        token = client.get("/runs", **api).json()["next_page_token"]
        second = {"page_token": token}
        ui = timed(client, "/ui/", repeat, params=second, **page)
        rows.append(
            ("runs page, its second page", ui, timed(client, "/runs", repeat, params=second, **api))
        )
        ui = timed(client, f"/ui/runs/{shown}", repeat, **page)
        rows.append(
            ("run page (largest artefacts)", ui, timed(client, f"/runs/{shown}", repeat, **api))
        )
        compare = [("run", r) for r in five]
        rows.append(
            ("compare 5 runs", timed(client, "/ui/compare", repeat, params=compare, **page), None)
        )
        rows.append(
            ("models page (newest 100 of all)", timed(client, "/ui/models", repeat, **page), None)
        )
    return rows


def report(
    runs: int,
    repeat: int,
    rows: list[tuple[str, Timing, Timing | None]],
    browser: list[float] | None,
) -> None:
    print(f"\nrun store: SQLite, {runs:,} runs, a model version for each finished one")
    heading = f"page (median of {repeat})"
    print(f"{heading:38} {'ms':>8} {'max ms':>8} {'KB':>6}  {'GET API ms':>10} {'page/API':>8}")
    for label, (median, worst, size), peer in rows:
        beside = f"{peer[0]:10.1f} {median / peer[0]:7.1f}x" if peer else ""
        print(f"{label:38} {median:8.1f} {worst:8.1f} {size / 1024:6.0f}  {beside}")
    if browser:
        median, worst = statistics.median(browser), max(browser)
        print(
            f"\nin Chromium, navigation to load, runs page (first 50 of {runs:,}): "
            f"median {median:.0f} ms, worst {worst:.0f} ms"
        )
    else:
        print("\n(no browser timing: Chromium or Playwright missing, or --no-browser)")
    slowest = max(rows[0][1][1], max(browser) if browser else 0) / 1000
    verdict = "within" if slowest < FLOOR_S else "OVER"
    print(
        f"floor (issue 16): the runs page's first page in under {FLOOR_S:.0f} s: worst "
        f"{slowest * 1000:.0f} ms, {verdict} ({FLOOR_S / slowest:.0f}x headroom)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    data = work / "data"
    db = Database(f"sqlite:///{data / 'sql_app.db'}")
    revision.upgrade(db)
    started = time.perf_counter()
    fill(db, args.runs)
    shown, five = prepare(db)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    db.dispose()
    print(f"filled {args.runs:,} runs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    _, key = KeyRing(data / "api_keys.json").create("bench", "admin")
    with serve_training(data, work / "serve.log", REQUIRE_API_KEY="true") as server:
        cookie = log_in(server.url, key)
        rows = measure(server.url, cookie, key, shown, five, args.repeat)
        browser = None if args.no_browser else in_browser(server.url, cookie, min(args.repeat, 10))
    report(args.runs, args.repeat, rows, browser)


if __name__ == "__main__":
    main()

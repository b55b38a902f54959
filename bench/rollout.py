"""Rollouts under load, through the edge: `training up` with 2 replicas and 4 keep-alive clients
posting single-row predictions for the whole run.

Prints, for a promote and a rollback: requests, failed (floor 0), p99 while the switch ran
beside the steady state's, and seconds from the alias move to the last answer of the old tag
(floor 60 s). Then the kill -9 of one replica: requests lost (floor: at most those in flight
when it died), how long requests kept failing (floor 5 s) and when it was replaced (floor 15 s).

Run: .venv/bin/python bench/rollout.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import Answer, Stack, Traffic, up_stack

STEADY_S = 15.0
CLIENTS = 4


def _json(stack: Stack, *args: str) -> Any:
    done = stack.cli(*args, "--json")
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout)


def _p99_ms(answers: list[Answer]) -> float:
    return float(np.percentile([a.seconds for a in answers], 99) * 1000) if answers else 0.0


def _traffic(stack: Stack) -> Traffic:
    return Traffic(f"{stack.url}/predict", stack.predict_key, stack.tls, stack.example, CLIENTS)


def _newest(stack: Stack) -> dict[str, Any]:
    return dict(_json(stack, "deployments", "--limit", "1")["deployments"][0])


def steady(stack: Stack) -> list[Answer]:
    with _traffic(stack) as traffic:
        time.sleep(STEADY_S)
    return traffic.answers


def switch(stack: Stack, move: list[str], old: str) -> dict[str, Any]:
    """Move the alias under load; figures of the rollout that follows."""
    before = _newest(stack)["id"]
    with _traffic(stack) as traffic:
        time.sleep(2)
        moved = time.time()
        if stack.cli(*move).returncode != 0:
            raise SystemExit(f"{move} failed")
        while (row := _newest(stack))["id"] == before or row["result"] not in ("live", "failed"):
            time.sleep(0.5)
        done = time.time()
        time.sleep(2)
    during = [a for a in traffic.answers if moved <= a.sent <= done]
    last_old = max((a.sent for a in traffic.answers if a.tag == old), default=moved)
    return {
        "result": row["result"],
        "requests": len(traffic.answers),
        "failed": len(traffic.failed()),
        "p99_switch_ms": _p99_ms(during),
        "to_new_s": max(0.0, last_old - moved),
    }


def kill_one(stack: Stack) -> dict[str, Any]:
    with _traffic(stack) as traffic:
        time.sleep(3)
        port, killed = stack.kill_instance()
        replaced = None
        while replaced is None and time.time() - killed < 60:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    replaced = time.time() - killed
            except httpx.HTTPError:
                time.sleep(0.2)
        time.sleep(3)
    lost = traffic.failed()
    in_flight = [a for a in traffic.answers if a.sent <= killed <= a.sent + a.seconds]
    return {
        "requests": len(traffic.answers),
        "lost": len(lost),
        "in_flight": len(in_flight),
        "failing_s": (max(a.sent for a in lost) - killed) if lost else 0.0,
        "replaced_s": replaced if replaced is not None else float("inf"),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        print("starting `training up` with 2 replicas ...", flush=True)
        with up_stack(Path(tmp), replicas=2) as stack:
            first = _json(stack, "aliases", "show", "production")["model_tag"]
            args = ("train", "--dataset", "iris", "--model", "random_forest", "--cv", "0")
            second = _json(stack, *args)["model_tag"]
            base = steady(stack)
            rate = len(base) / STEADY_S
            p99 = _p99_ms(base)
            print(f"steady state: {rate:.0f} req/s, p99 {p99:.1f} ms ({first})", flush=True)
            promote = switch(stack, ["promote", second, "--alias", "production"], first)
            rollback = switch(stack, ["rollback", "--alias", "production"], second)
            killed = kill_one(stack)
    print(
        "\n| step | result | requests | failed (floor 0) | p99 switch | vs steady | to 100% new |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, row in (("promote", promote), ("rollback", rollback)):
        print(
            f"| {name} | {row['result']} | {row['requests']} | {row['failed']} | "
            f"{row['p99_switch_ms']:.1f} ms | {row['p99_switch_ms'] / p99:.2f}x | "
            f"{row['to_new_s']:.1f} s (floor 60) |"
        )
    print(
        f"\nkill -9 of 1 of 2 replicas: {killed['lost']} lost of {killed['requests']} "
        f"(floor: <= {killed['in_flight']} in flight when it died); failing for "
        f"{killed['failing_s']:.1f} s (floor 5); replaced in {killed['replaced_s']:.1f} s "
        "(floor 15)"
    )


if __name__ == "__main__":
    main()

"""The running stack follows its alias: a promote and a rollback go live under load with no
failed request, a version that cannot answer never takes traffic, a replica killed with
SIGKILL loses at most its requests in flight, and every rollout is recorded.

One `training up` with two replicas serves the whole module; the tests run in the order
written, each leaving the alias where the next expects it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from servers import BIN, Stack, Traffic, up_stack, wait_until

pytestmark = pytest.mark.slow

#: Replaces a registered model with one whose pipeline cannot predict (the matrix inverse of
#: a 1 x 4 row fails), under the same tag and metadata: a version that loads but cannot answer.
BREAK_MODEL = """
import sys, bentoml, numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
source = bentoml.models.get(sys.argv[1])
labels, metadata = source.info.labels, source.info.metadata
broken = Pipeline([("inverse", FunctionTransformer(np.linalg.inv)),
                   ("model", bentoml.sklearn.load_model(source))])
bentoml.models.delete(sys.argv[1])
bentoml.sklearn.save_model(sys.argv[1], broken, labels=labels, metadata=metadata)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with up_stack(tmp_path_factory.mktemp("rollout"), replicas=2) as running:
        yield running


def _json(stack: Stack, *args: str) -> Any:
    done = stack.cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def tags(stack: Stack) -> dict[str, str]:
    """The first version (what `training up` trained) and a second one to promote."""
    first = _json(stack, "aliases", "show", "production")["model_tag"]
    trained = _json(stack, "train", "--dataset", "iris", "--model", "random_forest", "--cv", "0")
    return {"first": first, "second": trained["model_tag"]}


def _api(stack: Stack, method: str, path: str) -> Any:
    answer = httpx.request(
        method,
        f"{stack.url}/training{path}",
        headers={"Authorization": f"Bearer {stack.admin_key}"},
        verify=stack.tls,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _last_id(stack: Stack) -> int:
    rows = _api(stack, "GET", "/deployments?limit=1")["deployments"]
    return int(rows[0]["id"]) if rows else 0


def _ended(stack: Stack, after: int) -> dict[str, Any]:
    """The first rollout after ``after`` once it is live or failed."""
    found: dict[str, Any] = {}

    def ended() -> bool:
        rows = [r for r in _api(stack, "GET", "/deployments")["deployments"] if r["id"] > after]
        found.update(rows[-1] if rows and rows[-1]["result"] in ("live", "failed") else {})
        return bool(found)

    wait_until(ended, 240, "the rollout to end")
    return found


def _traffic(stack: Stack) -> Traffic:
    return Traffic(f"{stack.url}/predict", stack.predict_key, stack.tls, stack.example)


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def _switched_with_no_failure(traffic: Traffic, row: dict[str, Any], old: str, new: str) -> None:
    assert row["result"] == "live", row
    assert traffic.failed() == []
    assert traffic.tags_after(_epoch(row["live_at"])) == {new}  # only the new tag once live
    assert {a.tag for a in traffic.answers} == {old, new}
    switch = _epoch(row["live_at"]) - _epoch(row["started_at"])
    print(f"\n{len(traffic.answers)} requests, 0 failed; {old} -> {new} live in {switch:.1f} s")


def test_a_promote_under_load_goes_live_with_no_failed_request(
    stack: Stack, tags: dict[str, str]
) -> None:
    before = _last_id(stack)
    with _traffic(stack) as traffic:
        time.sleep(1)
        promoted = stack.cli("promote", tags["second"], "--alias", "production")
        assert promoted.returncode == 0, promoted.stderr
        row = _ended(stack, before)
        time.sleep(1)
    _switched_with_no_failure(traffic, row, tags["first"], tags["second"])
    assert row["from_tag"] == tags["first"] and row["requested_by"].startswith("cli:")
    shown = _json(stack, "aliases", "show", "production")
    assert shown["model_tag"] == shown["live_tag"] == tags["second"]


def test_a_rollback_through_the_api_under_load_is_the_same(
    stack: Stack, tags: dict[str, str]
) -> None:
    before = _last_id(stack)
    with _traffic(stack) as traffic:
        time.sleep(1)
        assert _api(stack, "POST", "/aliases/production/rollback")["model_tag"] == tags["first"]
        row = _ended(stack, before)
        time.sleep(1)
    _switched_with_no_failure(traffic, row, tags["second"], tags["first"])
    assert row["requested_by"] == "key:make-up:admin"


def _broken_version(stack: Stack) -> str:
    """A registered version (a run of its own) that loads but cannot answer."""
    trained = _json(
        stack, "train", "--dataset", "iris", "--model", "logistic_regression", "--cv", "0"
    )
    tag = str(trained["model_tag"])
    made = subprocess.run(
        [str(BIN / "python"), "-c", BREAK_MODEL, tag],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return tag


def test_a_version_that_cannot_answer_never_takes_traffic_and_is_recorded(
    stack: Stack, tags: dict[str, str]
) -> None:
    broken = _broken_version(stack)
    before = _last_id(stack)
    with _traffic(stack) as traffic:
        assert stack.cli("promote", broken, "--alias", "production").returncode == 0
        row = _ended(stack, before)
        time.sleep(1)
    assert row["result"] == "failed" and row["to_tag"] == broken and row["error"]
    assert traffic.failed() == [] and {a.tag for a in traffic.answers} == {tags["first"]}
    shown = _json(stack, "aliases", "show", "production")
    assert shown["model_tag"] == broken and shown["live_tag"] == tags["first"]
    assert shown["last_deployment"]["result"] == "failed"
    text = stack.cli("aliases", "show", "production").stdout
    assert "requested" in text and "failed" in text
    assert len(stack.instances()) == 2  # the new instances were stopped, the old ones serve
    print(f"\nfailed rollout recorded: {row['error'].splitlines()[0]}")
    # Back to the version that serves: no rollout is needed for it.
    assert stack.cli("promote", tags["first"], "--alias", "production").returncode == 0


def test_a_replica_killed_outright_loses_at_most_its_requests_in_flight(stack: Stack) -> None:
    with _traffic(stack) as traffic:
        time.sleep(2)
        port, killed = stack.kill_instance()
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200,
            60,
            "the killed replica replaced",
        )
        replaced = time.time() - killed
        time.sleep(2)
    lost = traffic.failed()
    routed_away = max((a.sent for a in lost), default=killed) - killed
    print(
        f"\nkill -9 of one of 2 replicas under {traffic.clients} clients: {len(lost)} requests "
        f"lost of {len(traffic.answers)}; last loss {routed_away:.1f} s after the kill; "
        f"replaced in {replaced:.1f} s"
    )
    assert len(lost) <= traffic.clients  # at most what was in flight on it
    assert routed_away <= 5
    assert stack.predicts()


def _canary_started(stack: Stack, percent: int) -> float:
    wait_until(
        lambda: f"canary: {percent}% of the requests" in stack.err.read_text(), 120, "canary"
    )
    return time.time()


def _tag_counts(port: int) -> dict[str, float]:
    """Requests answered by one instance, by model tag, from its own metrics (loopback)."""
    counts: dict[str, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line.startswith("prediction_requests_total{") and 'endpoint="/predict"' in line:
            tag = line.split('model_tag="')[1].split('"')[0]
            counts[tag] = counts.get(tag, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_a_canary_takes_its_share_and_an_abort_takes_it_back(
    stack: Stack, tags: dict[str, str]
) -> None:
    with _traffic(stack) as traffic:
        asked = stack.cli("promote", tags["second"], "--alias", "production", "--canary", "20")
        assert asked.returncode == 0 and "canary" in asked.stdout, asked.stderr
        started = _canary_started(stack, 20) + 3  # the edge's next health checks admit it
        time.sleep(8)
        window = time.time()
        ports = [i.cmdline()[i.cmdline().index("--port") + 1] for i in stack.instances()]
        by_instance = [_tag_counts(int(port)) for port in ports]
        assert stack.cli("canary", "abort").returncode == 0
        wait_until(lambda: "ending the canary: aborted" in stack.err.read_text(), 60, "abort")
        wait_until(lambda: len(stack.instances()) == 2, 60, "the canary stopped")
        ended = time.time()
        time.sleep(1)
    assert traffic.failed() == []
    during = [a.tag for a in traffic.answers if started < a.sent < window]
    share = during.count(tags["second"]) / len(during)
    print(f"\ncanary 20%: {share:.1%} of {len(during)} requests answered by the new version")
    assert 0.12 < share < 0.28
    assert {tag for counts in by_instance for tag in counts} == {tags["first"], tags["second"]}
    assert traffic.tags_after(ended) == {tags["first"]}
    row = _api(stack, "GET", "/deployments?limit=1")["deployments"][0]
    assert row["result"] == "aborted" and row["canary_percent"] == 20
    assert row["error"].startswith("aborted by cli:")
    assert _json(stack, "aliases", "show", "production")["model_tag"] == tags["first"]


def test_a_canary_promoted_goes_live_with_no_failed_request(
    stack: Stack, tags: dict[str, str]
) -> None:
    before = _last_id(stack)
    with _traffic(stack) as traffic:
        assert stack.cli("promote", tags["second"], "--canary", "50").returncode == 0
        _canary_started(stack, 50)
        time.sleep(3)
        assert stack.cli("canary", "promote").returncode == 0
        row = _ended(stack, before)
        time.sleep(1)
    _switched_with_no_failure(traffic, row, tags["first"], tags["second"])
    assert row["canary_percent"] == 50
    refused = stack.cli("canary", "abort")
    assert refused.returncode != 0 and "no canary" in refused.stderr


def test_every_rollout_is_listed_by_the_cli_and_the_api(stack: Stack, tags: dict[str, str]) -> None:
    listed = _json(stack, "deployments")["deployments"]
    assert listed == _api(stack, "GET", "/deployments")["deployments"]
    assert [r["result"] for r in listed] == [
        "live",  # the canary promoted
        "aborted",  # the canary aborted
        "failed",  # the version that could not answer
        "replaced",  # the rollback
        "replaced",  # the promote
        "replaced",  # the first version, from `training up`
    ]
    assert listed[-1]["requested_by"] == "training up" and listed[-1]["from_tag"] is None
    assert [r["to_tag"] for r in listed[3:]] == [tags["first"], tags["second"], tags["first"]]
    table = stack.cli("deployments").stdout
    assert "replaced" in table and "failed" in table
    assert _api(stack, "GET", "/deployments?alias=staging")["deployments"] == []
    refused = httpx.get(
        f"{stack.url}/training/deployments?alias=NOT%20AN%20ALIAS",
        headers={"Authorization": f"Bearer {stack.admin_key}"},
        verify=stack.tls,
    )
    assert refused.status_code == 400 and "alias" in refused.text

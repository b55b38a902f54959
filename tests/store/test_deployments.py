"""The deployments table: a rollout's row from start to its end, the live tag of an alias, and
what the registry says of both."""

from __future__ import annotations

import pytest

from training.store.db import Database
from training.store.deployments import Deployments
from training.store.records import DatasetInfo, DeploymentResult
from training.store.registry import Registry
from training.store.runs import RunStore


def _run(store: RunStore) -> str:
    return store.create_run(
        experiment="e",
        model_name="ridge",
        task="regression",
        dataset=DatasetInfo(name="diabetes"),
        params={},
    )


@pytest.fixture
def deployments(db: Database) -> Deployments:
    return Deployments(db)


def test_a_rollout_goes_live_and_replaces_the_previous_one(deployments: Deployments) -> None:
    first = deployments.begin("production", None, "m:1", "make-up")
    assert deployments.live_tag("production") is None  # rolling is not live yet
    deployments.went_live(first)
    second = deployments.begin("production", "m:1", "m:2", "alice")
    assert deployments.live_tag("production") == "m:1"
    live = deployments.went_live(second)
    assert live.result is DeploymentResult.LIVE and live.live_at is not None
    rows = deployments.recent("production")
    assert [(r.to_tag, r.result) for r in rows] == [
        ("m:2", DeploymentResult.LIVE),
        ("m:1", DeploymentResult.REPLACED),
    ]
    assert rows[1].ended_at is not None and rows[0].requested_by == "alice"
    assert deployments.live_tag("production") == "m:2"
    assert deployments.live_tag("staging") is None


def test_a_failed_rollout_keeps_the_live_tag_and_its_error(deployments: Deployments) -> None:
    deployments.went_live(deployments.begin("production", None, "m:1", None))
    failed = deployments.begin("production", "m:1", "m:bad", "bob")
    row = deployments.ended(failed, DeploymentResult.FAILED, "smoke prediction: HTTP 500 " * 200)
    assert row.result is DeploymentResult.FAILED and row.error and len(row.error) == 2000
    assert deployments.live_tag("production") == "m:1"


def test_rows_a_stopped_stack_left_unfinished_are_failed_with_why(
    deployments: Deployments,
) -> None:
    rolling = deployments.begin("production", None, "m:1", None)
    canary = deployments.request_canary("production", "m:1", "m:2", None, 10).id
    assert deployments.close_unfinished("the stack stopped") == [rolling, canary]
    assert {r.result for r in deployments.recent()} == {DeploymentResult.FAILED}
    assert deployments.close_unfinished("again") == []


def test_the_alias_says_who_moved_it_and_which_tag_is_live(
    db: Database, store: RunStore, registry: Registry, deployments: Deployments
) -> None:
    from sqlalchemy import insert

    from training.store.runs import utcnow
    from training.store.tables import ModelVersion

    runs = {tag: _run(store) for tag in ("m:1", "m:2")}
    with db.write() as session:
        for tag, run in runs.items():
            session.execute(
                insert(ModelVersion).values(tag=tag, run_id=run, name="m", created_at=utcnow())
            )
    registry.promote("m:1", "production", requested_by="alice")
    deployments.went_live(deployments.begin("production", None, "m:1", "alice"))
    shown = registry.promote("m:2", "production", requested_by="bob")
    assert shown.model_tag == "m:2" and shown.live_tag == "m:1"
    assert [m.requested_by for m in shown.history] == ["alice", "bob"]
    assert shown.last_deployment is not None and shown.last_deployment.to_tag == "m:1"
    back = registry.rollback("production", requested_by="carol")
    assert back.model_tag == "m:1" and back.history[-1].requested_by == "carol"


def test_one_canary_at_a_time_and_its_share_is_checked(deployments: Deployments) -> None:
    from training.errors import UserError

    asked = deployments.request_canary("production", "m:1", "m:2", "alice", 10)
    assert asked.result is DeploymentResult.CANARY and asked.canary_percent == 10
    assert deployments.open_canary("production") == asked
    with pytest.raises(UserError, match="a canary of m:2 is running"):
        deployments.request_canary("production", "m:1", "m:3", "bob", 20)
    deployments.ended(asked.id, DeploymentResult.ABORTED, "aborted by alice")
    assert deployments.open_canary("production") is None
    for share in (0, 100):
        with pytest.raises(UserError, match="1 to 99"):
            deployments.request_canary("production", "m:1", "m:3", "bob", share)

"""Alembic owns the schema: one head, upgrade from empty, models equal migrations, round trip."""

from __future__ import annotations

import threading

from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from training.errors import SchemaOutOfDate
from training.store import revision
from training.store.db import Database
from training.store.records import DatasetInfo
from training.store.registry import Registry
from training.store.tables import Base


def test_migrations_have_a_single_head() -> None:
    script = ScriptDirectory.from_config(revision.alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_upgrade_from_empty_creates_every_table_and_matches_the_models(db_url: str) -> None:
    db = Database(db_url)
    assert revision.current_revision(db) is None
    revision.upgrade(db)
    assert revision.current_revision(db) == revision.head_revision()
    with db.engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert revision.schema_drift(db) == []
    db.dispose()


def test_downgrade_to_base_and_upgrade_again(db_url: str) -> None:
    db = Database(db_url)
    revision.upgrade(db)
    revision.downgrade(db, "base")
    with db.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    revision.upgrade(db)
    assert revision.schema_drift(db) == []
    db.dispose()


def test_a_new_database_is_created_on_first_use(db_url: str) -> None:
    db = Database(db_url)
    revision.ensure_current(db)
    assert revision.current_revision(db) == revision.head_revision()
    db.dispose()


def test_a_store_midway_through_creation_is_waited_for_not_refused(db_url: str) -> None:
    """Eight processes on a new file: one creates, the rest must not judge a half-made store."""
    creator, other = Database(db_url), Database(db_url)
    outcome: list[object] = []

    def check() -> None:
        try:
            revision.ensure_current(other)
            outcome.append("current")
        except SchemaOutOfDate as exc:
            outcome.append(exc.message)

    with revision.creation_lock(creator):
        revision.upgrade(creator, "0001")  # the first migration is in, the head is not yet
        waiter = threading.Thread(target=check)
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive() and outcome == []
        revision.upgrade(creator)
    waiter.join(60)
    assert outcome == ["current"]
    creator.dispose()
    other.dispose()


def test_a_database_at_an_unknown_revision_is_refused(
    db_url: str,
) -> None:
    db = Database(db_url)
    revision.upgrade(db)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'old0'")
    try:
        revision.ensure_current(db)
    except SchemaOutOfDate as exc:
        assert "does not know" in exc.message
    else:
        raise AssertionError("an unknown revision was accepted")
    db.dispose()


def test_a_database_behind_the_head_stops_with_the_upgrade_command(db_url: str) -> None:
    db = Database(db_url)
    revision.upgrade(db)
    revision.downgrade(db, "base")  # alembic_version stays: an existing, outdated store
    try:
        revision.ensure_current(db)
    except SchemaOutOfDate as exc:
        assert "run `training db upgrade`" in exc.message
        assert "\n" not in exc.message
    else:
        raise AssertionError("a store behind the head was accepted")
    db.dispose()


def _populate_at_0001(db: Database) -> None:
    """A store as the first schema left it: runs with params, metrics, tags, a registry."""
    revision.upgrade(db, "0001")
    t = "2026-01-01 10:00:00.000000"
    with db.engine.begin() as conn:
        sql = conn.exec_driver_sql
        sql(f"INSERT INTO experiments (id, name, created_at) VALUES (1, 'exp', '{t}')")
        for i in range(3):
            sql(
                "INSERT INTO runs (id, experiment_id, status, start_time, end_time, model_name, "
                f"task, dataset_name, model_tag) VALUES ('run{i}', 1, 'FINISHED', '{t}', '{t}', "
                f"'ridge', 'regression', 'diabetes', 'm:v{i}')"
            )
            sql(f"INSERT INTO params (run_id, key, value) VALUES ('run{i}', 'alpha', '{i}')")
            sql(f"INSERT INTO tags (run_id, key, value) VALUES ('run{i}', 'team', 'a')")
            for step in (1, 2):
                sql(
                    f"INSERT INTO metrics (run_id, key, step, value, timestamp) VALUES "
                    f"('run{i}', 'cv_fold_r2', {step}, 0.{step}, '{t}')"
                )
            sql(
                "INSERT INTO latest_metrics (run_id, key, value, step) "
                f"VALUES ('run{i}', 'r2', 0.5, 0)"
            )
            sql(
                "INSERT INTO model_versions (tag, run_id, name, created_at) "
                f"VALUES ('m:v{i}', 'run{i}', 'm', '{t}')"
            )
        sql(
            "INSERT INTO aliases (name, model_tag, updated_at) "
            f"VALUES ('production', 'm:v2', '{t}')"
        )
        sql(
            "INSERT INTO alias_moves (alias, from_tag, to_tag, action, moved_at) VALUES "
            f"('production', NULL, 'm:v2', 'promote', '{t}')"
        )


def _counts(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {
            table: conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
            for table in (
                "runs",
                "params",
                "tags",
                "metrics",
                "latest_metrics",
                "model_versions",
                "aliases",
                "alias_moves",
            )
        }


def test_the_queue_migration_keeps_every_row_of_a_populated_store(db_url: str) -> None:
    from training.store.runs import RunStore

    db = Database(db_url)
    _populate_at_0001(db)
    before = _counts(db)
    revision.upgrade(db)
    assert _counts(db) == before  # a table rebuilt by batch mode must not cascade-delete
    store = RunStore(db)
    run = store.get_run("run1")
    assert (
        run.submitted_at == run.start_time
        and run.params == {"alpha": "1"}
        and run.tags == {"team": "a"}
    )
    assert [p.step for p in store.metric_history("run1")] == [1, 2]
    assert Registry(db).get_alias("production").model_tag == "m:v2"
    queued = store.create_run(
        experiment="exp",
        model_name="ridge",
        task="regression",
        dataset=DatasetInfo(name="diabetes"),
        params={},
        status="QUEUED",
        request={"dataset": "diabetes", "model": "ridge"},
    )
    assert store.queued() == [queued]

    revision.downgrade(db, "0001")
    with db.engine.connect() as conn:
        row = conn.exec_driver_sql(f"SELECT status, error FROM runs WHERE id = '{queued}'").one()
    assert row[0] == "KILLED" and "queued" in row[1]
    assert _counts(db)["params"] == before["params"] and _counts(db)["runs"] == before["runs"] + 1
    revision.upgrade(db)
    assert revision.schema_drift(db) == []
    db.dispose()


def test_the_deployments_migration_keeps_every_row_and_records_rollouts(db_url: str) -> None:
    from training.store.deployments import Deployments

    db = Database(db_url)
    _populate_at_0001(db)
    revision.upgrade(db, "0002")
    before = _counts(db)
    revision.upgrade(db)
    assert _counts(db) == before
    alias = Registry(db).get_alias("production")
    assert alias.model_tag == "m:v2" and alias.history[0].requested_by is None
    assert alias.live_tag is None and alias.last_deployment is None
    deployments = Deployments(db)
    deployments.went_live(deployments.begin("production", None, "m:v2", "ops"))
    moved = Registry(db).promote("m:v1", "production", requested_by="ops")
    assert moved.live_tag == "m:v2" and moved.history[-1].requested_by == "ops"

    revision.downgrade(db, "0002")
    assert _counts(db) == {**before, "alias_moves": before["alias_moves"] + 1}
    revision.upgrade(db)
    assert revision.schema_drift(db) == [] and Deployments(db).recent() == []
    db.dispose()


def test_the_sweeps_migration_keeps_every_row_and_records_sweeps(db_url: str) -> None:
    from training.store.records import DatasetInfo, NewRun
    from training.store.runs import RunStore
    from training.store.sweeps import NewSweep, Sweeps

    db = Database(db_url)
    _populate_at_0001(db)
    revision.upgrade(db, "0003")
    before = _counts(db)
    revision.upgrade(db)
    assert _counts(db) == before  # batch mode rebuilt runs: nothing cascaded away
    store = RunStore(db)
    old = store.get_run("run1")
    assert old.worker is None and old.sweep is None and old.params == {"alpha": "1"}
    assert [p.step for p in store.metric_history("run1")] == [1, 2]
    run = NewRun(
        experiment="exp",
        model_name="ridge",
        task="regression",
        dataset=DatasetInfo(name="diabetes"),
        params={"alpha": "0.5"},
        status="QUEUED",
        request={"dataset": "diabetes", "model": "ridge"},
    )
    sweeps = Sweeps(db)
    request = {"grid": {"alpha": [0.5, 1]}}
    sweep_id, run_ids = sweeps.create(
        NewSweep("exp", "diabetes", "ridge", "rmse", "min", request, [run, run])
    )
    store.start_queued(run_ids[0], None)
    store.set_worker(run_ids[0], "w1", "host-a", {"python": "3.11"})
    assert store.get_run(run_ids[0]).worker == "w1"
    assert store.get_run(run_ids[1]).sweep == sweep_id
    assert sweeps.get(sweep_id).status == "RUNNING"

    revision.downgrade(db, "0003")
    assert _counts(db) == {**before, "runs": before["runs"] + 2, "params": before["params"] + 2}
    revision.upgrade(db)
    assert revision.schema_drift(db) == [] and sweeps.recent() == []
    db.dispose()


def test_the_evaluations_migration_keeps_every_row_and_records_artefacts(db_url: str) -> None:
    """0005 on a populated store: nothing lost, the old runs have no artefacts, a new one does;
    down to the revision before it and up again. (Its predecessor is asked of the script, so
    the test holds wherever the migration is chained.)"""
    from training.store.records import Evaluation, Importance
    from training.store.runs import RunStore

    before_0005 = ScriptDirectory.from_config(revision.alembic_config(db_url)).get_revision("0005")
    assert before_0005 is not None
    db = Database(db_url)
    _populate_at_0001(db)
    revision.upgrade(db, str(before_0005.down_revision))
    before = _counts(db)
    revision.upgrade(db, "0005")
    assert _counts(db) == before
    store = RunStore(db)
    assert store.evaluation("run1") is None and store.get_run("run1").params == {"alpha": "1"}
    found = Evaluation(rows=3, importances=[Importance(feature="bmi", value=1.5)])
    run_id = store.create_run(
        experiment="exp",
        model_name="ridge",
        task="regression",
        dataset=DatasetInfo(name="diabetes"),
        params={},
    )
    store.finish(run_id, "FINISHED", model_tag=f"m:{run_id}", model_name="m", evaluation=found)
    assert store.evaluation(run_id) == found
    newest = Registry(db).list_models(limit=2)  # newest first, on the index 0005 adds
    assert len(newest) == 2 and newest[0].tag == f"m:{run_id}"

    revision.downgrade(db, str(before_0005.down_revision))
    with db.engine.connect() as conn:
        assert "evaluations" not in inspect(conn).get_table_names()
    assert _counts(db)["runs"] == before["runs"] + 1
    revision.upgrade(db)
    assert revision.schema_drift(db) == [] and RunStore(db).evaluation(run_id) is None
    db.dispose()

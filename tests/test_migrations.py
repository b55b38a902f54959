"""Alembic owns the schema: one head, upgrade from empty, models equal migrations, round trip."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from training import revision
from training.db import Database
from training.errors import SchemaOutOfDate
from training.models import Base


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

"""The run store's schema version: Alembic upgrade, downgrade, current and the start-up check."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from training.errors import SchemaOutOfDate
from training.filelock import exclusive
from training.settings import Settings
from training.store.db import Database, available, get_database
from training.store.tables import Base

MIGRATIONS = Path(__file__).with_name("migrations")
UPGRADE_HINT = "training db upgrade"
_PG_LOCK_KEY = 7_342_019  # any fixed number: the advisory lock guarding schema creation


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(db: Database) -> str | None:
    with available(), db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    with available():
        command.upgrade(alembic_config(db.url), revision)


def downgrade(db: Database, revision: str) -> None:
    with available():
        command.downgrade(alembic_config(db.url), revision)


def is_empty(db: Database) -> bool:
    with available(), db.engine.connect() as conn:
        return not inspect(conn).get_table_names()


@contextlib.contextmanager
def creation_lock(db: Database) -> Iterator[None]:
    """One creator at a time: eight processes started at once on a new store must not race."""
    url = db.engine.url
    if db.is_sqlite and url.database and url.database != ":memory:":
        with exclusive(f"{url.database}.lock"):
            yield
        return
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_LOCK_KEY})")
            try:
                yield
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_PG_LOCK_KEY})")
                conn.commit()
        return
    yield


def ensure_current(db: Database) -> None:
    """Create a brand-new store; refuse, with the fix in one line, one that is behind or unknown.

    An empty database is created on first use (the manual asks for ``sql_app.db`` to be made
    when missing); an existing one is never migrated behind the operator's back.
    """
    head, current = head_revision(), current_revision(db)
    if current != head:  # also a new, empty store: it has no revision
        # A creator may be midway (first tables made, head not yet stamped): wait for it to
        # finish before judging, so eight processes started on a new file all see it whole.
        with creation_lock(db):
            if is_empty(db):
                upgrade(db)
            current = current_revision(db)
    if current == head:
        return
    known = {
        rev.revision for rev in ScriptDirectory.from_config(alembic_config(db.url)).walk_revisions()
    }
    if current in known or current is None:
        raise SchemaOutOfDate(
            f"the run store is at revision {current or 'none'}, behind {head}: run `{UPGRADE_HINT}`"
        )
    raise SchemaOutOfDate(
        f"the run store is at revision {current}, which this version does not know "
        f"(newest known: {head}); upgrade this software"
    )


def schema_drift(db: Database) -> list[Any]:
    """Differences between the ORM models and the live schema (empty when they match)."""
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def checked_database(settings: Settings) -> Database:
    """The process's database, created if new, refused if its schema is not current."""
    db = get_database(settings)
    ensure_current(db)
    return db

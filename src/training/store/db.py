"""Engine and sessions for the run store; SQLite tuned for many writers, PostgreSQL by URL.

SQLite facts this module relies on (measured here with 8 writer processes): WAL and
busy_timeout alone still fail read-then-write transactions with "database is locked", because
a deferred transaction that later wants to write cannot wait for the lock. Every write
transaction here therefore starts with ``BEGIN IMMEDIATE``: it takes the write lock up front
and waits ``busy_timeout`` for it. Reads stay deferred so they never queue behind writers.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from training.errors import Unavailable, UserError
from training.settings import Settings

_WRITE = "training_write"
#: SQLite's words for a store another process holds, or one it cannot reach.
_SQLITE_BUSY = ("locked", "busy", "unable to open", "disk i/o")
#: PostgreSQL's classes of a server that is down, going down, overloaded or busy with a lock:
#: connection exceptions, operator intervention, insufficient resources; lock not available,
#: serialization failure and deadlock (the transaction was rolled back: nothing was written).
_PG_UNAVAILABLE = ("08", "57", "53", "55P03", "40001", "40P01")


def _unavailable(exc: DBAPIError) -> bool:
    """Is this a store that is busy or down (try again), rather than a mistake of ours?"""
    if exc.connection_invalidated:
        return True
    code = getattr(exc.orig, "sqlstate", None)
    if isinstance(code, str):
        return code.startswith(_PG_UNAVAILABLE)
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower()
        # psycopg's failure to connect carries no SQLSTATE; SQLite's busy store says so.
        return code is None and ("connect" in text or any(w in text for w in _SQLITE_BUSY))
    return False


@contextlib.contextmanager
def available() -> Iterator[None]:
    """The store's failures that are not a bug of ours, as the errors callers answer: a busy
    or unreachable store is ``Unavailable`` (a 503, exit 75); a value it cannot hold (which
    the request checks should have caught, field by field) a ``UserError``."""
    try:
        yield
    except (DataError, UnicodeEncodeError) as exc:
        reason = _one_line(exc.orig if isinstance(exc, DataError) else exc)
        raise UserError(f"the run store cannot hold a value of this request: {reason}") from exc
    except DBAPIError as exc:
        if not _unavailable(exc):
            raise
        reason = _one_line(exc.orig)
        raise Unavailable(f"the run store is busy or unreachable ({reason}); try again") from exc


def _one_line(exc: BaseException | None) -> str:
    return " ".join(str(exc).split())[:200]


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own would be deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_db_engine(url: str, busy_timeout_ms: int = 30_000) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """One engine per process (a forked worker must make its own: the pid is checked)."""

    def __init__(self, url: str, busy_timeout_ms: int = 30_000) -> None:
        self.url = url
        self.engine = create_db_engine(url, busy_timeout_ms)
        self._pid = os.getpid()
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(**{_WRITE: True}), expire_on_commit=False
        )

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError("Database used across fork; create a new one in the child")

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        self._check_process()
        with available(), self._read() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that holds the write lock from its start (SQLite) and commits at exit;
        rolled back whole if anything fails, a busy store included."""
        self._check_process()
        with available(), self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


@functools.cache
def _database(url: str, busy_timeout_ms: int, pid: int) -> Database:
    return Database(url, busy_timeout_ms)


def get_database(settings: Settings) -> Database:
    return _database(settings.effective_database_url, settings.sqlite_busy_timeout_ms, os.getpid())

"""The run store's tables as SQLAlchemy 2 typed ORM classes.

Alembic owns the schema (``migrations/``); these classes must match it, which a test checks.
Nothing outside ``runs.py``, ``search.py`` and ``registry.py`` touches these rows: they hand
out the plain records of ``records.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from training.store.records import DeploymentResult, RunStatus

# Named constraints, so a later migration can drop or alter them by name (batch mode on SQLite).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored naive in UTC and handed back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the run store; use UTC-aware times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in RunStatus) + ")", name="status_valid"
        ),
        # Keyset pages: newest first, the run id breaking ties.
        Index(None, "experiment_id", "start_time", "id"),
        Index(None, "start_time", "id"),
        Index(None, "status"),
        # The queue: waiting runs in submission order; and the default page order.
        Index(None, "status", "submitted_at"),
        Index(None, "submitted_at", "id"),
        Index(None, "sweep_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"))
    status: Mapped[str] = mapped_column(String(16))
    submitted_at: Mapped[datetime]
    # When it started running (a queued run: when it was submitted, until it starts).
    start_time: Mapped[datetime]
    end_time: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # What was asked for: the whole request of a run submitted to the queue, so a restart can
    # run it; and the algorithm.
    request: Mapped[dict[str, Any] | None]
    model_name: Mapped[str] = mapped_column(String(64))

    task: Mapped[str] = mapped_column(String(16))
    # The data set the run saw.
    dataset_name: Mapped[str] = mapped_column(String(500))
    dataset_sha256: Mapped[str | None] = mapped_column(String(64))
    dataset_rows: Mapped[int | None]
    dataset_columns: Mapped[list[Any] | None]
    target: Mapped[str | None] = mapped_column(String(200))
    classes: Mapped[list[Any] | None]
    # Where and with what it ran.
    environment: Mapped[dict[str, Any] | None]
    pid: Mapped[int | None]
    host: Mapped[str | None] = mapped_column(String(255))
    # The cluster worker that ran it (its name), once it started there.
    worker: Mapped[str | None] = mapped_column(String(255))
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id"))
    # Who queues and runs it: a `training sweep` process ("host:pid:start time"), or none:
    # the training service, whose restart takes up the runs of no live owner.
    owner: Mapped[str | None] = mapped_column(String(255))
    # Progress of the run as the pipeline reports it (one source for the CLI and the API).
    stage: Mapped[str | None] = mapped_column(String(64))
    progress: Mapped[float | None] = mapped_column(Float)
    # The artefact, once saved.
    model_tag: Mapped[str | None] = mapped_column(String(200), unique=True)

    experiment: Mapped[Experiment] = relationship(lazy="joined", innerjoin=True)


class RunEvaluation(Base):
    """A finished run's held-out evaluation (``records.Evaluation`` as JSON): a table of its
    own, so pages of runs never carry it."""

    __tablename__ = "evaluations"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[dict[str, Any]]


class Param(Base):
    __tablename__ = "params"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(String(8000))


class Metric(Base):
    """Every logged value of a metric, one row per step (fold k of a cross-validation, ...)."""

    __tablename__ = "metrics"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    timestamp: Mapped[datetime]


class LatestMetric(Base):
    """The value at the highest step of each metric: what filters and orderings compare.

    Kept beside the history (as MLflow does) so ``metrics.accuracy > 0.9 ORDER BY accuracy``
    walks one index instead of grouping the whole history.
    """

    __tablename__ = "latest_metrics"
    __table_args__ = (Index(None, "key", "value", "run_id"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    step: Mapped[int] = mapped_column(Integer)


class Tag(Base):
    __tablename__ = "tags"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(String(8000))


class ModelVersion(Base):
    """A model in BentoML's store that a finished run produced."""

    __tablename__ = "model_versions"
    # Newest first, a page at a time (the dashboard's models page).
    __table_args__ = (Index(None, "created_at"),)

    tag: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), unique=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime]


class Alias(Base):
    """A movable name (production, staging, ...) pointing at one model version."""

    __tablename__ = "aliases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    model_tag: Mapped[str] = mapped_column(ForeignKey("model_versions.tag"))
    updated_at: Mapped[datetime]


class AliasMove(Base):
    """Every move of an alias: from where, to where, when and why (promote or rollback)."""

    __tablename__ = "alias_moves"
    __table_args__ = (
        CheckConstraint("action IN ('promote', 'rollback')", name="action_valid"),
        Index(None, "alias", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(100))
    from_tag: Mapped[str | None] = mapped_column(String(200))
    to_tag: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(16))
    moved_at: Mapped[datetime]
    requested_by: Mapped[str | None] = mapped_column(String(200))


class Deployment(Base):
    """One rollout of an alias's target to the running stack: what, who asked, how it ended."""

    __tablename__ = "deployments"
    __table_args__ = (
        CheckConstraint(
            "result IN (" + ", ".join(f"'{r}'" for r in DeploymentResult) + ")",
            name="result_valid",
        ),
        Index(None, "alias", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias: Mapped[str] = mapped_column(String(100))
    from_tag: Mapped[str | None] = mapped_column(String(200))
    to_tag: Mapped[str] = mapped_column(String(200))
    requested_by: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime]
    live_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    result: Mapped[str] = mapped_column(String(16))
    canary_percent: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class Sweep(Base):
    """A search over hyper-parameters: its request once, its runs are ordinary runs."""

    __tablename__ = "sweeps"
    __table_args__ = (
        CheckConstraint("goal IN ('max', 'min')", name="goal_valid"),
        Index(None, "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"))
    created_at: Mapped[datetime]
    dataset_name: Mapped[str] = mapped_column(String(500))
    model_name: Mapped[str] = mapped_column(String(64))
    # The metric that picks the best run, and whether higher or lower is better.
    metric: Mapped[str] = mapped_column(String(250))
    goal: Mapped[str] = mapped_column(String(8))
    request: Mapped[dict[str, Any]]
    total: Mapped[int] = mapped_column(Integer)
    requested_by: Mapped[str | None] = mapped_column(String(200))
    cancelled_at: Mapped[datetime | None]

    experiment: Mapped[Experiment] = relationship(lazy="joined", innerjoin=True)

"""Runs: experiments, runs and what they logged; plain records in, plain records out."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from training.errors import Conflict, NotFound, UserError
from training.store.db import Database
from training.store.records import (
    RUN_ID,
    DatasetInfo,
    Evaluation,
    MetricPoint,
    NewRun,
    RunInfo,
    RunPage,
    RunStatus,
)
from training.store.search import RunSearch
from training.store.tables import (
    Experiment,
    LatestMetric,
    Metric,
    ModelVersion,
    Param,
    Run,
    RunEvaluation,
    Tag,
)

MAX_PAGE = 1000
MIN_PREFIX = 6


def utcnow() -> datetime:
    return datetime.now(UTC)


def experiment_id_of(session: Session, name: str) -> int:
    query = select(Experiment.id).where(Experiment.name == name)
    found = session.scalar(query)
    if found is not None:
        return found
    try:
        with session.begin_nested():  # a savepoint: a concurrent creator wins cleanly
            experiment = Experiment(name=name, created_at=utcnow())
            session.add(experiment)
        return experiment.id
    except IntegrityError:  # created meanwhile by another transaction (PostgreSQL)
        return session.scalars(query).one()


def _run_info(
    run: Run, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str]
) -> RunInfo:
    return RunInfo(
        id=run.id,
        experiment=run.experiment.name,
        status=RunStatus(run.status),
        submitted_at=run.submitted_at,
        start_time=run.start_time,
        end_time=run.end_time,
        error=run.error,
        model_name=run.model_name,
        task=run.task,
        dataset=DatasetInfo(
            name=run.dataset_name,
            sha256=run.dataset_sha256,
            rows=run.dataset_rows,
            columns=run.dataset_columns,
            target=run.target,
            classes=run.classes,
        ),
        environment=run.environment or {},
        model_tag=run.model_tag,
        request=run.request,
        stage=run.stage,
        progress=run.progress,
        pid=run.pid,
        host=run.host,
        worker=run.worker,
        sweep=run.sweep_id,
        owner=run.owner,
        params=params,
        metrics=metrics,
        tags=tags,
    )


def _load(session: Session, ids: list[str]) -> list[RunInfo]:
    """Whole records for these runs, in the given order, in four queries whatever their number."""
    if not ids:
        return []
    runs = {run.id: run for run in session.scalars(select(Run).where(Run.id.in_(ids)))}
    params: dict[str, dict[str, str]] = {run_id: {} for run_id in ids}
    metrics: dict[str, dict[str, float]] = {run_id: {} for run_id in ids}
    tags: dict[str, dict[str, str]] = {run_id: {} for run_id in ids}
    for p in session.scalars(select(Param).where(Param.run_id.in_(ids)).order_by(Param.key)):
        params[p.run_id][p.key] = p.value
    for m in session.scalars(
        select(LatestMetric).where(LatestMetric.run_id.in_(ids)).order_by(LatestMetric.key)
    ):
        metrics[m.run_id][m.key] = m.value
    for t in session.scalars(select(Tag).where(Tag.run_id.in_(ids)).order_by(Tag.key)):
        tags[t.run_id][t.key] = t.value
    return [_run_info(runs[i], params[i], metrics[i], tags[i]) for i in ids if i in runs]


def insert_run(session: Session, new: NewRun) -> str:
    """Add one run (its params and tags) in the caller's transaction; its new id."""
    run_id = uuid.uuid4().hex
    now = utcnow()
    queued = new.status == RunStatus.QUEUED
    session.add(
        Run(
            id=run_id,
            experiment_id=experiment_id_of(session, new.experiment),
            status=new.status,
            submitted_at=now,
            start_time=now,
            request=new.request,
            model_name=new.model_name,
            task=new.task,
            dataset_name=new.dataset.name,
            dataset_sha256=new.dataset.sha256,
            dataset_rows=new.dataset.rows,
            dataset_columns=new.dataset.columns,
            target=new.dataset.target,
            classes=new.dataset.classes,
            environment=new.environment,
            pid=None if queued else os.getpid(),
            host=None if queued else socket.gethostname(),
            stage="queued" if queued else "starting",
            progress=0.0,
            sweep_id=new.sweep,
            owner=new.owner,
        )
    )
    session.flush()
    session.add_all(Param(run_id=run_id, key=k, value=v) for k, v in new.params.items())
    session.add_all(Tag(run_id=run_id, key=k, value=v) for k, v in new.tags.items())
    return run_id


class RunStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- writing ---------------------------------------------------------------------------

    def create_run(
        self,
        *,
        experiment: str,
        model_name: str,
        task: str,
        dataset: DatasetInfo,
        params: Mapping[str, str],
        tags: Mapping[str, str] | None = None,
        environment: dict[str, Any] | None = None,
        status: RunStatus = RunStatus.RUNNING,
        request: dict[str, Any] | None = None,
        sweep: str | None = None,
        owner: str | None = None,
    ) -> str:
        """A new run: RUNNING in this process (the CLI), or QUEUED with its request (the API)."""
        new = NewRun(
            experiment=experiment,
            model_name=model_name,
            task=task,
            dataset=dataset,
            params=dict(params),
            tags=dict(tags or {}),
            environment=environment,
            status=status,
            request=request,
            sweep=sweep,
            owner=owner,
        )
        with self.db.write() as session:
            return insert_run(session, new)

    def start_queued(self, run_id: str, environment: dict[str, Any] | None) -> None:
        """QUEUED -> RUNNING: in this process (with its environment), or, given none, sent to
        a cluster, whose worker is recorded when it starts (``set_worker``). Conflict if it
        is no longer waiting (cancelled)."""
        here = environment is not None
        with self.db.write() as session:
            run = session.get(Run, run_id, with_for_update=True)
            if run is None:
                raise NotFound(f"no run {run_id}")
            if run.status != RunStatus.QUEUED:
                raise Conflict(f"run {run_id} is {run.status}, not QUEUED")
            run.status, run.start_time = RunStatus.RUNNING, utcnow()
            run.stage = "starting" if here else "sent to the cluster"
            run.pid = os.getpid() if here else None
            run.host = socket.gethostname() if here else None
            run.environment = environment

    def set_worker(
        self, run_id: str, worker: str, host: str | None, environment: dict[str, Any]
    ) -> None:
        """The cluster worker that took a running run, its host and its libraries."""
        with self.db.write() as session:
            session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == RunStatus.RUNNING)
                .values(
                    worker=worker[:255], host=(host or "")[:255] or None, environment=environment
                )
            )

    def queued(self, taken: Callable[[str | None], bool] = lambda owner: True) -> list[str]:
        """Waiting runs, in submission order; ``taken``: which owners' runs to hand out."""
        with self.db.read() as session:
            query = (
                select(Run.id, Run.owner)
                .where(Run.status == RunStatus.QUEUED)
                .order_by(Run.submitted_at, Run.id)
            )
            return [run_id for run_id, owner in session.execute(query) if taken(owner)]

    def running(self) -> list[RunInfo]:
        with self.db.read() as session:
            ids = list(session.scalars(select(Run.id).where(Run.status == RunStatus.RUNNING)))
            return _load(session, ids)

    def set_dataset(self, run_id: str, dataset: DatasetInfo) -> None:

        with self.db.write() as session:
            session.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(
                    dataset_name=dataset.name,
                    dataset_sha256=dataset.sha256,
                    dataset_rows=dataset.rows,
                    dataset_columns=dataset.columns,
                    target=dataset.target,
                    classes=dataset.classes,
                )
            )

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        """Record parameters; a parameter once recorded never changes (same value is a no-op)."""
        with self.db.write() as session:
            rows = session.execute(
                select(Param.key, Param.value).where(
                    Param.run_id == run_id, Param.key.in_(list(params))
                )
            )
            existing = {key: value for key, value in rows}
            for key, value in params.items():
                if key in existing and existing[key] != value:
                    raise Conflict(
                        f"parameter {key!r} of run {run_id} is {existing[key]!r} already; "
                        "parameters cannot change"
                    )
            session.add_all(
                Param(run_id=run_id, key=k, value=v) for k, v in params.items() if k not in existing
            )

    def log_metrics(self, run_id: str, values: Iterable[tuple[str, float, int]]) -> None:
        """Record (key, value, step) points; the highest step of a key is its current value."""
        now = utcnow()
        with self.db.write() as session:
            for key, value, step in values:
                session.merge(Metric(run_id=run_id, key=key, step=step, value=value, timestamp=now))
                latest = session.get(LatestMetric, (run_id, key))
                if latest is None:
                    session.add(LatestMetric(run_id=run_id, key=key, value=value, step=step))
                elif step >= latest.step:
                    latest.value, latest.step = value, step

    def set_progress(self, run_id: str, stage: str, progress: float) -> None:
        with self.db.write() as session:
            session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == RunStatus.RUNNING)
                .values(stage=stage, progress=progress)
            )

    def finish(
        self,
        run_id: str,
        status: RunStatus,
        *,
        error: str | None = None,
        model_tag: str | None = None,
        model_name: str | None = None,
        evaluation: Evaluation | None = None,
        waiting_only: bool = False,
    ) -> None:
        """End a run. A FINISHED run with a model registers its version in the same transaction,
        so a run is never finished without its model version, nor a version left without it;
        its held-out ``evaluation`` is recorded in that transaction too. ``waiting_only``: end
        it only if it is still QUEUED (Conflict once it has started)."""
        status = RunStatus(status)
        if not status.ended:
            raise ValueError(f"not a terminal status: {status}")
        if evaluation is not None and status != RunStatus.FINISHED:
            raise ValueError("only a finished run records an evaluation")
        now = utcnow()
        with self.db.write() as session:
            run = session.get(Run, run_id, with_for_update=True)
            if run is None:
                raise NotFound(f"no run {run_id}")
            if RunStatus(run.status).ended:
                raise Conflict(f"run {run_id} has ended already ({run.status})")
            if waiting_only and run.status != RunStatus.QUEUED:
                raise Conflict(f"run {run_id} has started already")
            run.status, run.end_time, run.error = status, now, error
            run.stage = status.lower()
            if status == RunStatus.FINISHED:
                run.progress = 1.0
            if model_tag is not None:
                if status != RunStatus.FINISHED or model_name is None:
                    raise ValueError("only a finished run registers a model version")
                run.model_tag = model_tag
                session.add(
                    ModelVersion(tag=model_tag, run_id=run_id, name=model_name, created_at=now)
                )
            if evaluation is not None:
                data = evaluation.model_dump(mode="json")
                session.add(RunEvaluation(run_id=run_id, data=data))

    # -- reading ---------------------------------------------------------------------------

    def resolve_id(self, session: Session, run_id: str) -> str:
        """A full run id from itself or a unique prefix of at least six characters."""
        if not RUN_ID.fullmatch(run_id):  # no run has it: the store need not be asked
            raise NotFound(f"no run {run_id!r}")
        if session.get(Run, run_id) is not None:
            return run_id
        if len(run_id) >= MIN_PREFIX:
            matches = list(
                session.scalars(select(Run.id).where(Run.id.startswith(run_id)).limit(2))
            )
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise UserError(f"run id prefix {run_id!r} is ambiguous; give more characters")
        raise NotFound(f"no run {run_id!r}")

    def get_run(self, run_id: str) -> RunInfo:
        with self.db.read() as session:
            return _load(session, [self.resolve_id(session, run_id)])[0]

    def get_runs(self, run_ids: list[str]) -> list[RunInfo]:
        with self.db.read() as session:
            return _load(session, [self.resolve_id(session, r) for r in run_ids])

    def metric_history(self, run_id: str) -> list[MetricPoint]:
        with self.db.read() as session:
            full_id = self.resolve_id(session, run_id)
            rows = session.scalars(
                select(Metric).where(Metric.run_id == full_id).order_by(Metric.key, Metric.step)
            )
            return [
                MetricPoint(key=m.key, value=m.value, step=m.step, timestamp=m.timestamp)
                for m in rows
            ]

    def evaluation(self, run_id: str) -> Evaluation | None:
        """The held-out artefacts recorded when the run finished (None for another ending, or
        a run recorded before they were)."""
        with self.db.read() as session:
            row = session.get(RunEvaluation, self.resolve_id(session, run_id))
            return None if row is None else Evaluation.model_validate(row.data)

    def search(self, search: RunSearch, limit: int = 50, page_token: str | None = None) -> RunPage:
        if not 1 <= limit <= MAX_PAGE:
            raise UserError(f"limit must be between 1 and {MAX_PAGE}, got {limit}", field="limit")
        with self.db.read() as session:
            window = search.window_query(limit, page_token)
            rows: list[Any] = [] if window is None else list(session.execute(window).all())
            if len(rows) <= limit:  # no window, or a page it could not fill: the full queries
                rows = []
                for query in search.page_queries(limit, page_token):
                    rows.extend(session.execute(query).all())
                    if len(rows) > limit:
                        break
            page, more = rows[:limit], len(rows) > limit
            runs = _load(session, [row[0] for row in page])
        token = search.next_token(page[-1][0], page[-1][1]) if more else None
        return RunPage(runs=runs, next_page_token=token)

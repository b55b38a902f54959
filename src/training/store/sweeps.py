"""Sweeps: one record per search, its runs ordinary runs that name it; status read from them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from training.errors import Conflict, NotFound, UserError
from training.store.db import Database
from training.store.records import (
    RUN_ID,
    NewRun,
    RunStatus,
    SweepInfo,
    SweepProgress,
    SweepRun,
    SweepSummary,
)
from training.store.runs import MIN_PREFIX, experiment_id_of, insert_run, utcnow
from training.store.tables import LatestMetric, ModelVersion, Param, Run, Sweep

LIST_MAX = 200


@dataclass(frozen=True)
class NewSweep:
    experiment: str
    dataset: str
    model: str
    metric: str
    goal: str
    request: dict[str, Any]
    runs: Sequence[NewRun]
    requested_by: str | None = None


def _status(statuses: list[RunStatus], cancelled: bool) -> RunStatus:
    if cancelled:
        return RunStatus.KILLED
    if not all(status.ended for status in statuses):
        queued = all(s == RunStatus.QUEUED for s in statuses)
        return RunStatus.QUEUED if queued else RunStatus.RUNNING
    return RunStatus.FINISHED if RunStatus.FINISHED in statuses else RunStatus.FAILED


def ranked(runs: list[SweepRun], goal: str) -> list[SweepRun]:
    """The finished runs that have a value of the metric, best first (``goal``: max or min);
    of equals, the first submitted comes first."""
    scored = [r for r in runs if r.status == RunStatus.FINISHED and r.value is not None]
    sign = -1.0 if goal == "max" else 1.0
    return sorted(scored, key=lambda r: sign * (r.value or 0.0))  # a stable sort


def _best(runs: list[SweepRun], goal: str) -> SweepRun | None:
    return next(iter(ranked(runs, goal)), None)


class Sweeps:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, sweep: NewSweep) -> tuple[str, list[str]]:
        """The sweep and all its runs (QUEUED) in one transaction: all of it or nothing."""
        sweep_id = uuid.uuid4().hex
        with self.db.write() as session:
            session.add(
                Sweep(
                    id=sweep_id,
                    experiment_id=experiment_id_of(session, sweep.experiment),
                    created_at=utcnow(),
                    dataset_name=sweep.dataset,
                    model_name=sweep.model,
                    metric=sweep.metric,
                    goal=sweep.goal,
                    request=sweep.request,
                    total=len(sweep.runs),
                    requested_by=sweep.requested_by,
                )
            )
            session.flush()
            run_ids = [
                insert_run(session, run.model_copy(update={"sweep": sweep_id}))
                for run in sweep.runs
            ]
        return sweep_id, run_ids

    def request_cancel(
        self, sweep_id: str, taken: Callable[[str | None], bool] = lambda owner: True
    ) -> list[str]:
        """Mark the sweep cancelled; the ids of its runs that have not ended (to stop).
        Conflict when every run has ended already, or when they are run by an owner that
        ``taken`` refuses (a live `training sweep`: it is stopped where it runs)."""
        with self.db.write() as session:
            sweep = session.get(Sweep, self._resolve(session, sweep_id), with_for_update=True)
            assert sweep is not None
            query = select(Run.id, Run.status, Run.owner).where(Run.sweep_id == sweep.id)
            rows = [
                (run_id, owner)
                for run_id, status, owner in session.execute(query)
                if not RunStatus(status).ended
            ]
            open_runs = [run_id for run_id, _ in rows]
            if not open_runs:
                raise Conflict(f"sweep {sweep.id} has ended already")
            elsewhere = next((owner for _, owner in rows if not taken(owner)), None)
            if elsewhere is not None:
                raise Conflict(
                    f"sweep {sweep.id} is run by `training sweep` ({elsewhere}); stop it there "
                    "(Ctrl-C)"
                )
            if sweep.cancelled_at is None:
                sweep.cancelled_at = utcnow()
            return open_runs

    def get(self, sweep_id: str) -> SweepInfo:
        with self.db.read() as session:
            sweep = session.get(Sweep, self._resolve(session, sweep_id))
            assert sweep is not None
            runs = self._runs(session, [sweep])[sweep.id]
            return SweepInfo(**dict(self._summary(sweep, runs)), request=sweep.request, runs=runs)

    def recent(self, limit: int = 50) -> list[SweepSummary]:
        if not 1 <= limit <= LIST_MAX:
            raise UserError(f"limit must be between 1 and {LIST_MAX}, got {limit}", field="limit")
        with self.db.read() as session:
            query = select(Sweep).order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(limit)
            sweeps = list(session.scalars(query))
            runs = self._runs(session, sweeps)
            return [self._summary(sweep, runs[sweep.id]) for sweep in sweeps]

    # -- inside ------------------------------------------------------------------------------

    def _resolve(self, session: Session, sweep_id: str) -> str:
        """A full sweep id from itself or a unique prefix of at least six characters."""
        if RUN_ID.fullmatch(sweep_id):
            if session.get(Sweep, sweep_id) is not None:
                return sweep_id
            if len(sweep_id) >= MIN_PREFIX:
                query = select(Sweep.id).where(Sweep.id.startswith(sweep_id)).limit(2)
                matches = list(session.scalars(query))
                if len(matches) == 1:
                    return matches[0]
                if matches:
                    raise UserError(f"sweep id prefix {sweep_id!r} is ambiguous")
        raise NotFound(f"no sweep {sweep_id!r}")

    def _runs(self, session: Session, sweeps: list[Sweep]) -> dict[str, list[SweepRun]]:
        """Each sweep's runs in submission order, with their searched params and metric value."""
        found: dict[str, list[SweepRun]] = {sweep.id: [] for sweep in sweeps}
        if not sweeps:
            return found
        by_id = {sweep.id: sweep for sweep in sweeps}
        searched = {
            sweep.id: [*sweep.request.get("grid", {}), *sweep.request.get("ranges", {})]
            for sweep in sweeps
        }
        value = (
            select(LatestMetric.value)
            .join(Sweep, Sweep.id == Run.sweep_id)
            .where(and_(LatestMetric.run_id == Run.id, LatestMetric.key == Sweep.metric))
            .correlate(Run)
            .scalar_subquery()
        )
        rows = session.execute(
            select(Run.id, Run.sweep_id, Run.status, Run.worker, Run.error, value)
            .where(Run.sweep_id.in_(list(by_id)))
            .order_by(Run.submitted_at, Run.id)
        ).all()
        ids = [row[0] for row in rows]
        params: dict[str, dict[str, str]] = {run_id: {} for run_id in ids}
        for p in session.scalars(select(Param).where(Param.run_id.in_(ids))):
            params[p.run_id][p.key] = p.value
        versions = select(ModelVersion.run_id, ModelVersion.tag).where(ModelVersion.run_id.in_(ids))
        tags = {run_id: tag for run_id, tag in session.execute(versions)}
        for run_id, sweep_id, status, worker, error, metric in rows:
            keys = searched[sweep_id]
            found[sweep_id].append(
                SweepRun(
                    id=run_id,
                    status=RunStatus(status),
                    params={k: params[run_id][k] for k in keys if k in params[run_id]},
                    value=metric,
                    worker=worker,
                    model_tag=tags.get(run_id),
                    error=error,
                )
            )
        return found

    def _summary(self, sweep: Sweep, runs: list[SweepRun]) -> SweepSummary:
        statuses = [run.status for run in runs]
        return SweepSummary(
            id=sweep.id,
            experiment=sweep.experiment.name,
            created_at=sweep.created_at,
            dataset=sweep.dataset_name,
            model=sweep.model_name,
            metric=sweep.metric,
            goal=sweep.goal,
            status=_status(statuses, sweep.cancelled_at is not None),
            progress=SweepProgress(done=sum(s.ended for s in statuses), total=sweep.total),
            best=_best(runs, sweep.goal),
            requested_by=sweep.requested_by,
            cancelled_at=sweep.cancelled_at,
        )

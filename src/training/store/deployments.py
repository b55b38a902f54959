"""Deployments: every rollout of an alias's target to the running stack, as it went.

The rollout controller (``training.ops.rollout``) opens a row when it starts rolling a tag out
and ends it LIVE (the previous LIVE row of the alias becomes REPLACED) or FAILED with the
error. A canary step is asked for by `training promote --canary` (a CANARY row) and ends LIVE
(`training canary promote` moves the alias to it), ABORTED or FAILED. Which tag an alias's
running stack serves is the to_tag of its one LIVE row.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from training.errors import UserError
from training.store.db import Database
from training.store.records import DeploymentInfo, DeploymentResult
from training.store.runs import utcnow
from training.store.tables import Deployment

R = DeploymentResult
#: Rows a stack that stopped can no longer finish.
UNFINISHED = (R.ROLLING.value, R.CANARY.value)
ERROR_CHARS = 2000


def info(row: Deployment) -> DeploymentInfo:
    return DeploymentInfo(
        id=row.id,
        alias=row.alias,
        from_tag=row.from_tag,
        to_tag=row.to_tag,
        requested_by=row.requested_by,
        started_at=row.started_at,
        live_at=row.live_at,
        ended_at=row.ended_at,
        result=R(row.result),
        canary_percent=row.canary_percent,
        error=row.error,
    )


def _newest(session: Session, alias: str, result: DeploymentResult | None) -> Deployment | None:
    query = select(Deployment).where(Deployment.alias == alias)
    if result is not None:
        query = query.where(Deployment.result == result.value)
    return session.scalars(query.order_by(Deployment.id.desc()).limit(1)).first()


def live_row(session: Session, alias: str) -> Deployment | None:
    return _newest(session, alias, R.LIVE)


def open_canary_row(session: Session, alias: str) -> Deployment | None:
    return _newest(session, alias, R.CANARY)


def last_row(session: Session, alias: str) -> Deployment | None:
    return _newest(session, alias, None)


def _opened(session: Session, result: DeploymentResult, **fields: object) -> Deployment:
    row = Deployment(started_at=utcnow(), result=result.value, **fields)
    session.add(row)
    session.flush()
    return row


class Deployments:
    def __init__(self, db: Database) -> None:
        self.db = db

    def begin(self, alias: str, from_tag: str | None, to_tag: str, requested_by: str | None) -> int:
        with self.db.write() as session:
            row = _opened(
                session,
                R.ROLLING,
                alias=alias,
                from_tag=from_tag,
                to_tag=to_tag,
                requested_by=requested_by,
            )
            return row.id

    def request_canary(
        self, alias: str, from_tag: str, to_tag: str, requested_by: str | None, percent: int
    ) -> DeploymentInfo:
        """A canary step asked for: the running stack sends ``percent`` of the requests to
        ``to_tag`` until `training canary promote` or `abort`. One at a time per alias."""
        if not 1 <= percent <= 99:
            raise UserError("canary: give a share of requests from 1 to 99 (percent)")
        with self.db.write() as session:
            running = open_canary_row(session, alias)
            if running is not None:
                raise UserError(
                    f"a canary of {running.to_tag} is running for {alias!r}: end it first "
                    "(`training canary promote` or `training canary abort`)",
                    field="alias",
                )
            row = _opened(
                session,
                R.CANARY,
                alias=alias,
                from_tag=from_tag,
                to_tag=to_tag,
                requested_by=requested_by,
                canary_percent=percent,
            )
            return info(row)

    def open_canary(self, alias: str) -> DeploymentInfo | None:
        with self.db.read() as session:
            row = open_canary_row(session, alias)
            return None if row is None else info(row)

    def get(self, deployment_id: int) -> DeploymentInfo:
        with self.db.read() as session:
            return info(session.get_one(Deployment, deployment_id))

    def went_live(self, deployment_id: int) -> DeploymentInfo:
        """The rollout serves all traffic now: its row is LIVE, the alias's previous one
        REPLACED."""
        now = utcnow()
        with self.db.write() as session:
            row = session.get_one(Deployment, deployment_id)
            session.execute(
                update(Deployment)
                .where(Deployment.alias == row.alias, Deployment.result == R.LIVE.value)
                .values(result=R.REPLACED.value, ended_at=now)
            )
            row.result, row.live_at = R.LIVE.value, now
            return info(row)

    def ended(self, deployment_id: int, result: DeploymentResult, error: str) -> DeploymentInfo:
        """A rollout that never took all the traffic: FAILED or ABORTED, with why."""
        with self.db.write() as session:
            row = session.get_one(Deployment, deployment_id)
            row.result, row.ended_at, row.error = result.value, utcnow(), error[:ERROR_CHARS]
            return info(row)

    def close_unfinished(self, why: str) -> list[int]:
        """Rows left ROLLING or CANARY by a stack that stopped: FAILED, saying why."""
        with self.db.write() as session:
            rows = list(
                session.scalars(select(Deployment).where(Deployment.result.in_(UNFINISHED)))
            )
            for row in rows:
                row.result, row.ended_at, row.error = R.FAILED.value, utcnow(), why
            return [row.id for row in rows]

    def live_tag(self, alias: str) -> str | None:
        with self.db.read() as session:
            row = live_row(session, alias)
            return None if row is None else row.to_tag

    def recent(self, alias: str | None = None, limit: int = 50) -> list[DeploymentInfo]:
        """Newest first."""
        query = select(Deployment).order_by(Deployment.id.desc()).limit(limit)
        if alias is not None:
            query = query.where(Deployment.alias == alias)
        with self.db.read() as session:
            return [info(row) for row in session.scalars(query)]

"""The model registry: versions that finished runs produced, and aliases that point at them.

BentoML's store has no aliases (its ``:latest`` is only the newest by creation time); which
version ``production`` means lives here and is resolved to an explicit tag at build time.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from training.errors import NotFound, UserError
from training.store import deployments
from training.store.db import Database
from training.store.records import AliasInfo, AliasMoveInfo, ModelVersionInfo, checked_text
from training.store.runs import utcnow
from training.store.tables import Alias, AliasMove, ModelVersion

ALIAS_NAME = re.compile(r"[a-z][a-z0-9_-]{0,99}")


def check_alias_name(name: str) -> str:
    if not ALIAS_NAME.fullmatch(name):
        raise UserError(
            f"alias {name!r} is not a valid name: use lowercase letters, digits, '-' and '_', "
            "starting with a letter",
            field="alias",
        )
    return name


def _move_info(move: AliasMove) -> AliasMoveInfo:
    return AliasMoveInfo(
        from_tag=move.from_tag,
        to_tag=move.to_tag,
        action=move.action,
        moved_at=move.moved_at,
        requested_by=move.requested_by,
    )


def _history(session: Session, alias: str) -> list[AliasMoveInfo]:
    moves = session.scalars(
        select(AliasMove).where(AliasMove.alias == alias).order_by(AliasMove.id)
    )
    return [_move_info(m) for m in moves]


def _version(row: ModelVersion, aliases: list[str]) -> ModelVersionInfo:
    return ModelVersionInfo(
        tag=row.tag, name=row.name, run_id=row.run_id, created_at=row.created_at, aliases=aliases
    )


def _alias(session: Session, row: Alias) -> AliasInfo:
    live, last = deployments.live_row(session, row.name), deployments.last_row(session, row.name)
    return AliasInfo(
        name=row.name,
        model_tag=row.model_tag,
        updated_at=row.updated_at,
        history=_history(session, row.name),
        live_tag=None if live is None else live.to_tag,
        last_deployment=None if last is None else deployments.info(last),
    )


def _previous_target(history: list[AliasMoveInfo]) -> str | None:
    """Replay the moves as a stack: a promote pushes its target, a rollback pops one."""
    stack: list[str] = []
    for move in history:
        if move.action == "promote":
            stack.append(move.to_tag)
        elif stack:
            stack.pop()
    return stack[-2] if len(stack) >= 2 else None


class Registry:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list_models(
        self, name: str | None = None, limit: int | None = None
    ) -> list[ModelVersionInfo]:
        """Versions, newest first (``limit``: only so many of them)."""
        if name is not None:
            checked_text(name, "name")
        with self.db.read() as session:
            aliases: dict[str, list[str]] = {}
            for alias in session.scalars(select(Alias).order_by(Alias.name)):
                aliases.setdefault(alias.model_tag, []).append(alias.name)
            query = select(ModelVersion).order_by(ModelVersion.created_at.desc())
            if name:
                query = query.where(ModelVersion.name == name)
            if limit is not None:
                query = query.limit(limit)
            return [_version(v, aliases.get(v.tag, [])) for v in session.scalars(query)]

    def get_version(self, tag: str) -> ModelVersionInfo:
        checked_text(tag, "model_tag")
        with self.db.read() as session:
            version = session.get(ModelVersion, tag)
            if version is None:
                raise NotFound(
                    f"no model version {tag!r} in the registry (see `training models list`)"
                )
            names = list(session.scalars(select(Alias.name).where(Alias.model_tag == tag)))
            return _version(version, names)

    def _move(self, session: Session, alias: str, to_tag: str, action: str, by: str | None) -> None:
        current = session.get(Alias, alias, with_for_update=True)
        now = utcnow()
        if current is None:
            try:
                with session.begin_nested():  # a concurrent first promote wins cleanly
                    session.add(Alias(name=alias, model_tag=to_tag, updated_at=now))
                from_tag = None
            except IntegrityError:
                current = session.get(Alias, alias, with_for_update=True, populate_existing=True)
        if current is not None:
            if current.model_tag == to_tag:
                return  # already there: no move, no history entry
            from_tag = current.model_tag
            current.model_tag, current.updated_at = to_tag, now
        session.add(
            AliasMove(
                alias=alias,
                from_tag=from_tag,
                to_tag=to_tag,
                action=action,
                moved_at=now,
                requested_by=by,
            )
        )

    def promote(self, tag: str, alias: str, requested_by: str | None = None) -> AliasInfo:
        check_alias_name(alias)
        checked_text(tag, "model_tag")
        with self.db.write() as session:
            if session.get(ModelVersion, tag) is None:
                raise NotFound(
                    f"no model version {tag!r} in the registry: only models of finished runs "
                    "can be promoted (see `training models list`)",
                    field="model_tag",
                )
            self._move(session, alias, tag, "promote", requested_by)
        return self.get_alias(alias)

    def rollback(self, alias: str, requested_by: str | None = None) -> AliasInfo:
        if not ALIAS_NAME.fullmatch(alias):  # no alias can have this name
            raise NotFound(f"no alias {alias!r}", field="alias")
        with self.db.write() as session:
            if session.get(Alias, alias, with_for_update=True) is None:
                raise NotFound(f"no alias {alias!r}", field="alias")
            previous = _previous_target(_history(session, alias))
            if previous is None:
                raise UserError(f"alias {alias!r} has no previous target to roll back to")
            self._move(session, alias, previous, "rollback", requested_by)
        return self.get_alias(alias)

    def get_alias(self, alias: str) -> AliasInfo:
        if not ALIAS_NAME.fullmatch(alias):  # no alias can have this name
            raise NotFound(f"no alias {alias!r}", field="alias")
        with self.db.read() as session:
            row = session.get(Alias, alias)
            if row is None:
                raise NotFound(
                    f"no alias {alias!r}; promote a model first (`training promote`)", field="alias"
                )
            return _alias(session, row)

    def last_move(self, alias: str) -> AliasMoveInfo:
        """An alias's newest move (its target, when and by whom): one row, however long the
        history, for a caller that polls (the rollout controller)."""
        with self.db.read() as session:
            query = select(AliasMove).where(AliasMove.alias == alias)
            move = session.scalars(query.order_by(AliasMove.id.desc()).limit(1)).first()
            if move is None:
                raise NotFound(f"no alias {alias!r}", field="alias")
            return _move_info(move)

    def list_aliases(self) -> list[AliasInfo]:
        with self.db.read() as session:
            rows = list(session.scalars(select(Alias).order_by(Alias.name)))
            return [_alias(session, r) for r in rows]

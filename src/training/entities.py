"""Plain records the run store hands out; nothing outside the store sees an ORM row."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

TERMINAL_STATUSES = frozenset({"FINISHED", "FAILED", "KILLED"})


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class DatasetInfo:
    """What a run trained on: where it came from, its fingerprint and its shape."""

    name: str
    sha256: str | None = None
    rows: int | None = None
    columns: list[dict[str, Any]] | None = None
    target: str | None = None
    classes: list[Any] | None = None


@dataclass(frozen=True)
class MetricPoint:
    key: str
    value: float
    step: int
    timestamp: datetime


@dataclass(frozen=True)
class RunInfo:
    id: str
    experiment: str
    status: str
    submitted_at: datetime
    start_time: datetime
    end_time: datetime | None
    error: str | None
    model_name: str
    task: str
    dataset: DatasetInfo
    environment: dict[str, Any]
    model_tag: str | None
    request: dict[str, Any] | None
    stage: str | None

    progress: float | None
    pid: int | None
    host: str | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        if self.end_time is None:
            return None

        return (self.end_time - self.start_time).total_seconds()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["submitted_at"] = iso(self.submitted_at)
        data["start_time"] = iso(self.start_time)
        data["end_time"] = iso(self.end_time)
        data["duration_s"] = self.duration_s
        return data


@dataclass(frozen=True)
class RunPage:
    runs: list[RunInfo]
    next_page_token: str | None


@dataclass(frozen=True)
class ModelVersionInfo:
    tag: str
    name: str
    run_id: str
    created_at: datetime
    aliases: list[str]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "created_at": iso(self.created_at)}


@dataclass(frozen=True)
class AliasMoveInfo:
    from_tag: str | None
    to_tag: str
    action: str
    moved_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "moved_at": iso(self.moved_at)}


@dataclass(frozen=True)
class AliasInfo:
    name: str
    model_tag: str
    updated_at: datetime
    history: list[AliasMoveInfo]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_tag": self.model_tag,
            "updated_at": iso(self.updated_at),
            "history": [move.to_json() for move in self.history],
        }

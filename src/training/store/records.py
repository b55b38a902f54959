"""Plain records the run store hands out; nothing outside the store sees an ORM row.

Pydantic models, frozen: ``model_dump(mode="json")`` is their one serializer (the CLI's
``--json``, the training API's responses and its OpenAPI schemas all come from here).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    computed_field,
)

from training.errors import UserError

#: Times as ``datetime.isoformat`` writes them ("+00:00", as the API has always sent them).
Timestamp = Annotated[
    datetime, PlainSerializer(lambda value: value.isoformat(), return_type=str, when_used="json")
]


#: What a run id can look like (ours are uuid4 hex), or a prefix of one.
RUN_ID = re.compile(r"[0-9A-Za-z]{1,32}")


def storable(text: str) -> str:
    """Text the run store can hold, else ValueError saying why: no NUL character (PostgreSQL
    refuses it), and Unicode that UTF-8 can encode (no lone surrogate: "\\ud800" in JSON)."""
    if "\x00" in text:
        raise ValueError("must not contain the NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from exc
    return text


def checked_text(text: str, field: str) -> str:
    """``storable`` for text that does not come through a pydantic model (query parameters,
    CLI arguments): a UserError naming the field."""
    try:
        return storable(text)
    except ValueError as exc:
        raise UserError(f"{field}: {exc}", field=field) from exc


#: A request's text that ends in the run store: checked where it enters, so a bad value is a
#: 400 naming its field, never a database error.
StoredText = Annotated[str, AfterValidator(storable)]


class RunStatus(StrEnum):
    """A run's lifecycle, as MLflow's: QUEUED -> RUNNING -> FINISHED | FAILED | KILLED."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @property
    def ended(self) -> bool:
        return self in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)


class Record(BaseModel):
    # protected_namespaces: fields such as model_tag and model_name are the records' own.
    model_config = ConfigDict(frozen=True, protected_namespaces=())


class DatasetInfo(Record):
    """What a run trained on: where it came from, its fingerprint and its shape."""

    name: str
    sha256: str | None = None
    rows: int | None = None
    columns: list[dict[str, Any]] | None = None
    target: str | None = None
    classes: list[Any] | None = None


class MetricPoint(Record):
    key: str
    value: float
    step: int
    timestamp: Timestamp


class RunInfo(Record):
    id: str
    experiment: str
    status: RunStatus
    submitted_at: Timestamp
    start_time: Timestamp
    end_time: Timestamp | None
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
    worker: str | None = Field(
        default=None, description="The cluster worker that ran it (its name); none for a local job."
    )
    sweep: str | None = Field(default=None, description="The sweep this run belongs to.")
    owner: str | None = Field(
        default=None,
        description="Who queues and runs it: a `training sweep` process (host:pid:start "
        "time), or none (the training service).",
    )
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_s(self) -> float | None:
        if self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()


class ConfusionMatrix(Record):
    labels: list[str] = Field(description="The classes, in the order of rows and columns.")
    counts: list[list[int]] = Field(
        description="counts[i][j]: held-out rows of class labels[i] predicted as labels[j]."
    )


class RocCurve(Record):
    label: str = Field(description="The positive class (one against the rest).")
    fpr: list[float]
    tpr: list[float]
    auc: float | None


class Residuals(Record):
    """A regressor on the held-out split: a sample of (actual, predicted) and the residuals'
    (actual - predicted) summary and histogram over every row."""

    actual: list[float]
    predicted: list[float]
    mean: float
    std: float
    mae: float
    max_abs: float
    quantiles: dict[str, float] = Field(description="p5, p25, p50, p75 and p95.")
    bins: list[float] = Field(description="Histogram edges (one more than counts).")
    counts: list[int]


class Importance(Record):
    feature: str
    value: float


class Evaluation(Record):
    """What the held-out split showed of a finished run's model, recorded when the run ends, so
    that nobody has to load the model again to see it."""

    rows: int = Field(description="Held-out rows evaluated.")
    confusion: ConfusionMatrix | None = None
    roc: list[RocCurve] = Field(default_factory=list)
    residuals: Residuals | None = None
    importances: list[Importance] = Field(
        default_factory=list, description="Per input column, largest first."
    )
    importance_kind: str | None = Field(
        default=None,
        description="impurity (trees) or coefficient (|weight| on scaled inputs); none when "
        "the estimator has neither.",
    )


class NewRun(Record):
    """A run about to be recorded: what ``RunStore.create_run`` and a sweep's creation take."""

    experiment: str
    model_name: str
    task: str
    dataset: DatasetInfo
    params: dict[str, str]
    tags: dict[str, str] = Field(default_factory=dict)
    environment: dict[str, Any] | None = None
    status: RunStatus = RunStatus.RUNNING
    request: dict[str, Any] | None = None
    sweep: str | None = None
    owner: str | None = None  # see RunInfo.owner


class RunPage(Record):
    runs: list[RunInfo]
    next_page_token: str | None = Field(description="Pass as page_token for the next page.")


class ModelVersionInfo(Record):
    tag: str
    name: str
    run_id: str
    created_at: Timestamp
    aliases: list[str]


class AliasMoveInfo(Record):
    from_tag: str | None
    to_tag: str
    action: str
    moved_at: Timestamp
    requested_by: str | None = None


class DeploymentResult(StrEnum):
    """A rollout's course: ROLLING -> LIVE (later REPLACED by the next one) | FAILED; a canary
    step is CANARY until it is promoted (LIVE) or ABORTED."""

    ROLLING = "rolling"
    CANARY = "canary"
    LIVE = "live"
    REPLACED = "replaced"
    FAILED = "failed"
    ABORTED = "aborted"


class DeploymentInfo(Record):
    id: int
    alias: str
    from_tag: str | None
    to_tag: str
    requested_by: str | None
    started_at: Timestamp
    live_at: Timestamp | None
    ended_at: Timestamp | None
    result: DeploymentResult
    canary_percent: int | None
    error: str | None


class AliasInfo(Record):
    name: str
    model_tag: str = Field(description="The requested target: where the alias points.")
    updated_at: Timestamp
    history: list[AliasMoveInfo]
    live_tag: str | None = Field(
        default=None, description="The tag the running stack last made live for this alias."
    )
    last_deployment: DeploymentInfo | None = None


class SweepRun(Record):
    """One run of a sweep as the sweep shows it."""

    id: str
    status: RunStatus
    params: dict[str, str] = Field(description="The searched parameters of this run.")
    value: float | None = Field(description="Its value of the sweep's metric, once it has one.")
    worker: str | None
    model_tag: str | None
    error: str | None


class SweepProgress(Record):
    done: int = Field(description="Runs ended (finished, failed or killed).")
    total: int


class SweepSummary(Record):
    id: str
    experiment: str
    created_at: Timestamp
    dataset: str
    model: str
    metric: str
    goal: str = Field(description="max or min: which end of the metric is best.")
    status: RunStatus = Field(
        description="QUEUED, RUNNING, then FINISHED (some run finished), FAILED (none did) or "
        "KILLED (cancelled)."
    )
    progress: SweepProgress
    best: SweepRun | None = Field(description="The finished run with the best metric value.")
    requested_by: str | None
    cancelled_at: Timestamp | None


class SweepInfo(SweepSummary):
    request: dict[str, Any]
    runs: list[SweepRun]

"""What the training API sends and takes beyond the store's own records: one model each, so
the OpenAPI document shows every response, errors included."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from training.learning.columns import DatasetMeta
from training.serving.features import FeatureType
from training.store.records import (
    DeploymentInfo,
    ModelVersionInfo,
    RunStatus,
    StoredText,
    SweepSummary,
)


class Schema(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())


class Problem(Schema):
    field: str | None = Field(description="The request field at fault (dotted), if one is.")
    reason: str


class ErrorBody(Schema):
    """Every error of the training API."""

    error: str = Field(description="What went wrong, in one line.")
    detail: list[Problem] = Field(description="Each problem with its field.")
    request_id: str = Field(
        default="", description="The request's X-Request-ID, as the service's log has it."
    )


class Submitted(Schema):
    run_id: str
    status: RunStatus


class SweepSubmitted(Schema):
    sweep_id: str
    run_ids: list[str] = Field(description="Its runs, QUEUED, in the order they will start.")


class SweepList(Schema):
    sweeps: list[SweepSummary]


class Cancelled(Schema):
    run_id: str
    status: RunStatus = Field(description="KILLED, or how the run ended meanwhile.")


class RunEvent(Schema):
    """The data of one server-sent event: `progress` while the run goes on, `end` once."""

    run_id: str
    status: RunStatus
    stage: str | None
    progress: float | None
    error: str | None
    metrics: dict[str, float] | None = Field(default=None, description="In the end event.")
    model_tag: str | None = Field(default=None, description="In the end event.")


class ModelVersions(Schema):
    models: list[ModelVersionInfo]


class DeploymentList(Schema):
    deployments: list[DeploymentInfo]


class AliasTarget(Schema):
    model_tag: StoredText = Field(min_length=1, max_length=200)


class ColumnSummary(Schema):
    name: str
    type: FeatureType


class DatasetSummary(Schema):
    dataset_id: str = Field(description="A `dataset` for POST /runs.")
    sha256: str
    rows: int
    columns: list[ColumnSummary]

    @classmethod
    def of(cls, meta: DatasetMeta) -> DatasetSummary:
        columns = [ColumnSummary(name=c.name, type=c.type) for c in meta.columns]
        return cls(dataset_id=meta.name, sha256=meta.sha256, rows=meta.rows, columns=columns)


class Datasets(Schema):
    uploads: list[DatasetSummary]
    shipped: list[DatasetSummary]


def json_response(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A model as JSON, serialized once (FastAPI would validate a returned model again)."""
    return Response(model.model_dump_json(), status_code, headers, media_type="application/json")

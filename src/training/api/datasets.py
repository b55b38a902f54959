"""Data sets: CSV uploads stored by content hash, and the sets scikit-learn ships."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from training.api.deps import SettingsDep, media_of
from training.api.errors import responses
from training.api.schemas import Datasets, DatasetSummary, json_response
from training.errors import TooLarge, UnsupportedMediaType
from training.learning import uploads
from training.learning.data import SHIPPED, dataset_meta
from training.settings import ServerSettings

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.post(
    "",
    status_code=201,
    response_model=DatasetSummary,
    responses={
        200: {"model": DatasetSummary, "description": "The same file was uploaded before."},
        **responses(413, 415, 422),
    },
    openapi_extra={
        "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}
    },
)
async def upload_dataset(request: Request, settings: SettingsDep) -> Response:
    """A CSV body (text/csv), stored by content hash; its id is a `dataset` for POST /runs."""
    return await receive_upload(request, settings)


async def receive_upload(request: Request, settings: ServerSettings) -> Response:
    """Store the request's CSV body (the API's and the dashboard's uploads): 201 with its
    summary, 200 if the same file came before; 413, 415 or 422 naming what is wrong."""
    media = media_of(request)
    if media != b"text/csv":
        shown = media.decode("latin-1") or "nothing"
        raise UnsupportedMediaType(
            f"send the CSV as Content-Type: text/csv, not {shown}", field="body"
        )
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"upload is larger than {limit} bytes", field="body")
    meta, created = await uploads.store_upload(request.stream(), limit)
    return json_response(DatasetSummary.of(meta), 201 if created else 200)


@router.get("", response_model=Datasets, responses=responses())
def list_datasets() -> Response:
    """Uploads and the data sets that ship with scikit-learn."""
    return json_response(
        Datasets(
            uploads=[DatasetSummary.of(m) for m in uploads.list_uploads()],
            shipped=[DatasetSummary.of(dataset_meta(name)) for name in SHIPPED],
        )
    )

"""The Data sets page: uploads and the shipped sets, a CSV dropped on the page is uploaded as
POST /datasets stores one, and the training form, checked by the same rules as POST /runs."""

from __future__ import annotations

from anyio.to_thread import run_sync
from fastapi import APIRouter, Request
from starlette.responses import Response

from training.api.datasets import receive_upload
from training.api.deps import ContextDep, SettingsDep
from training.api.runs import queue_training
from training.api.schemas import DatasetSummary
from training.api.ui.dashboard import FormDep, MemberDep, PageRoute, ScriptCallDep, Visit
from training.api.ui.forms import form_values, train_request
from training.errors import UserError
from training.learning import uploads
from training.learning.data import SHIPPED, dataset_meta
from training.learning.estimators import CATALOGUE

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)
feeds = APIRouter(prefix="/ui", include_in_schema=False)
#: The training form as it first shows.
DEFAULTS = {"dataset": "iris", "model": "logistic_regression", "cv": "5", "test_size": "0.2"}


def _sets() -> tuple[list[DatasetSummary], list[DatasetSummary]]:
    uploaded = [DatasetSummary.of(meta) for meta in uploads.list_uploads()]
    return uploaded, [DatasetSummary.of(dataset_meta(name)) for name in SHIPPED]


async def datasets_page(
    visit: Visit,
    status: int = 200,
    error: str | None = None,
    field: str | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    uploaded, shipped = await run_sync(_sets)  # the shipped sets are described once
    models = sorted({name for names in CATALOGUE.values() for name in names})
    return visit.page(
        "datasets.html",
        status,
        uploads=uploaded,
        shipped=shipped,
        models=models,
        values={**DEFAULTS, **(values or {})},
        error=error,
        field=field,
    )


@router.get("/datasets")
async def datasets(visit: MemberDep) -> Response:
    return await datasets_page(visit)


@router.post("/runs")
async def start_training(form: FormDep, context: ContextDep) -> Response:
    """Queue the form's training (the run's page follows it), or the form again with why not."""
    try:
        run_id = await queue_training(train_request(form.fields), context)
    except UserError as exc:
        values = form_values(form.fields)
        return await datasets_page(form.visit, exc.status_code, exc.message, exc.field, values)
    return form.visit.redirect(f"/runs/{run_id}")


@feeds.post("/datasets")
async def upload(request: Request, _: ScriptCallDep, settings: SettingsDep) -> Response:
    """A CSV body, as POST /datasets takes it (the page's script sends the dropped file)."""
    return await receive_upload(request, settings)

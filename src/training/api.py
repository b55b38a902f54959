"""The train-model web service (`training serve`): HTTP in, calls out, errors as JSON.

A FastAPI app (Starlette underneath: FastAPI adds the OpenAPI document generated from the same
pydantic request model the CLI validates with). Every rule lives elsewhere: what a valid
request is (request.py, pipeline.check), the queue (jobs.py), the store and the registry; this
module only translates. Published by Caddy under /training/ on the HTTPS origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from training import datasets
from training.config import ServerSettings
from training.data import SHIPPED, DatasetMeta, dataset_meta
from training.entities import TERMINAL_STATUSES
from training.errors import Busy, TooLarge, UserError
from training.jobs import Executor, LocalProcessExecutor
from training.keys import KeyStore, presented_key
from training.pipeline import submit
from training.query import RunSearch
from training.registry import Registry
from training.request import TrainRequest
from training.revision import checked_database
from training.store import RunStore

PUBLIC = frozenset({"/livez", "/readyz"})
EVENT_POLL_S = 0.5
RETRY_AFTER_S = 10  # a full queue drains at the pace of trainings: come back in a while


class Submitted(BaseModel):
    run_id: str
    status: str


class AliasMove(BaseModel):
    model_tag: str = Field(min_length=1, max_length=200)


def error(
    status: int, message: str, field: str | None = None, detail: list[dict[str, Any]] | None = None
) -> JSONResponse:
    problems = (
        detail if detail is not None else ([{"field": field, "reason": message}] if field else [])
    )
    return JSONResponse({"error": message, "detail": problems}, status_code=status)


def _route_path(scope: Any) -> str:
    path, root = str(scope["path"]), str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root + "/") else path


class AdminKeys:
    """Every route but the health checks needs an admin key when keys are required."""

    def __init__(self, app: Any, keys: KeyStore | None) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # The route's own path: uvicorn puts the prefix (root_path) in front of it, as ASGI says.
        if scope["type"] != "http" or self.keys is None or _route_path(scope) in PUBLIC:
            await self.app(scope, receive, send)
            return
        key = presented_key(scope["headers"])
        if not key:
            response = error(401, "missing API key: send Authorization: Bearer <key>")
        elif self.keys.verify(key, "admin") is not None:
            await self.app(scope, receive, send)
            return
        elif self.keys.verify(key, "predict") is not None:
            response = error(403, "this key may only predict; the training API needs an admin key")
        else:
            response = error(401, "invalid or revoked API key")
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


class Metrics:
    def __init__(self, executor: Executor) -> None:
        self.registry = CollectorRegistry()
        queued = Gauge(
            "training_jobs_queued", "Trainings waiting for a slot.", registry=self.registry
        )
        queued.set_function(lambda: executor.status().queued)
        running = Gauge("training_jobs_running", "Trainings running now.", registry=self.registry)
        running.set_function(lambda: len(executor.status().running))
        self.ended = Counter(
            "training_jobs_ended",
            "Trainings ended, by final status.",
            ["status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "training_job_duration_seconds",
            "Wall time of a training process.",
            buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=self.registry,
        )

    def job_done(self, status: str, seconds: float) -> None:
        self.ended.labels(status).inc()
        self.duration.observe(seconds)


def create_app(settings: ServerSettings) -> FastAPI:
    db = checked_database(settings)
    store, registry = RunStore(db), Registry(db)
    # The routes see only the Executor interface: a distributed one can take this one's place.
    executor: Executor = LocalProcessExecutor(
        store,
        max_jobs=settings.training_max_jobs,
        max_queued=settings.training_max_queued,
        memory_mb=settings.training_job_memory_mb,
        logs=settings.data_dir / "logs" / "runs",
    )
    metrics = Metrics(executor)
    executor.on_done = metrics.job_done
    submitting = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await executor.start()
        # Everything imported by now (scikit-learn, pandas, ...) lives as long as the process:
        # out of the collector's way, or each full collection walks it (measured: 150 ms
        # pauses in GET /runs, one request in ten).
        gc.collect()
        gc.freeze()
        yield
        await executor.shutdown(settings.training_shutdown_grace_s)

    # The prefix (TRAINING_ROOT_PATH) is uvicorn's root_path, which ASGI puts in front of every
    # path: the edge's /training/training/metrics arrives as /training/training/metrics and
    # matches nothing (FastAPI's own root_path argument would strip it a second time).
    app = FastAPI(
        title="training",
        description="Start, follow, cancel and inspect training runs; promote models.",
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(
        AdminKeys, keys=KeyStore(settings.keys_path) if settings.require_api_key else None
    )

    @app.exception_handler(UserError)
    async def user_error(_: Request, exc: UserError) -> JSONResponse:
        response = error(exc.status_code, exc.message, exc.field)
        if isinstance(exc, Busy):
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body") or None, "reason": e["msg"]}
            for e in exc.errors()
        ]
        return error(
            400,
            f"invalid request: {problems[0]['field'] or 'body'}: {problems[0]['reason']}",
            detail=problems,
        )

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    # -- health and metrics -----------------------------------------------------------------

    @app.get("/livez", include_in_schema=False)
    async def livez() -> Response:
        return Response("ok\n", media_type="text/plain")

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        ready = executor.ready
        return Response(
            "ok\n" if ready else "starting\n",
            status_code=200 if ready else 503,
            media_type="text/plain",
        )

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- runs -------------------------------------------------------------------------------

    @app.post("/runs", status_code=202, response_model=Submitted, tags=["runs"])
    async def start_run(body: TrainRequest, request: Request) -> JSONResponse:
        """Queue a training; checked by the same rules as `training train`."""
        if not (body.dataset in SHIPPED or datasets.is_dataset_id(body.dataset)):
            raise UserError(
                f"dataset {body.dataset!r}: use a shipped set ({', '.join(SHIPPED)}) or the id of "
                "an upload (POST /datasets); paths on the server are not accepted",
                field="dataset",
            )
        # Recording and queueing under one lock: the queue's order is the store's order.
        async with submitting:
            executor.has_room()
            run_id = await run_in_threadpool(submit, body, settings, store)
            await executor.submit(run_id)
        location = str(request.url_for("get_run", run_id=run_id))
        return JSONResponse(
            {"run_id": run_id, "status": "QUEUED"}, status_code=202, headers={"Location": location}
        )

    @app.get("/runs", tags=["runs"])
    async def list_runs(
        filter: Annotated[
            str | None, Query(description="e.g. metrics.accuracy > 0.9 and status = FINISHED")
        ] = None,
        order_by: Annotated[
            str | None,
            Query(
                description="submitted_at (default), start_time, end_time or metrics.NAME, asc|desc"
            ),
        ] = None,
        experiment: str | None = None,
        status: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        page_token: str | None = None,
    ) -> JSONResponse:
        """Runs, filtered and ordered like `training runs list`, by keyset pages."""
        search = RunSearch.parse(filter, order_by, experiment=experiment, status=status)
        page = await run_in_threadpool(store.search, search, limit, page_token)
        return JSONResponse(
            {"runs": [r.to_json() for r in page.runs], "next_page_token": page.next_page_token}
        )

    @app.get("/runs/{run_id}", tags=["runs"], name="get_run")
    async def get_run(run_id: str) -> JSONResponse:
        """Status, stage, progress, timestamps, params, metrics, model tag and error."""
        run = await run_in_threadpool(store.get_run, run_id)
        return JSONResponse(run.to_json())

    @app.post("/runs/{run_id}/cancel", tags=["runs"])
    async def cancel_run(run_id: str) -> JSONResponse:
        """A queued run becomes KILLED at once; a running one is stopped within seconds."""
        run = await run_in_threadpool(store.get_run, run_id)
        status = await executor.cancel(run.id)
        return JSONResponse({"run_id": run.id, "status": status})

    @app.get("/runs/{run_id}/events", tags=["runs"])
    async def run_events(run_id: str) -> EventSourceResponse:
        """Server-sent events: the run's progress as it changes, until it ends."""
        first = await run_in_threadpool(store.get_run, run_id)

        async def events() -> AsyncIterator[dict[str, str]]:
            seen: tuple[Any, ...] | None = None
            run = first
            while True:
                state = (run.status, run.stage, run.progress)
                if state != seen:
                    seen = state
                    data: dict[str, Any] = {
                        "run_id": run.id,
                        "status": run.status,
                        "stage": run.stage,
                        "progress": run.progress,
                        "error": run.error,
                    }
                    if run.status in TERMINAL_STATUSES:
                        data.update(metrics=run.metrics, model_tag=run.model_tag)
                        yield {"event": "end", "data": json.dumps(data)}
                        return
                    yield {"event": "progress", "data": json.dumps(data)}
                await asyncio.sleep(EVENT_POLL_S)
                run = await run_in_threadpool(store.get_run, run.id)

        # A comment every 15 s keeps proxies from cutting an idle stream.
        return EventSourceResponse(events(), ping=15)

    # -- models and aliases -----------------------------------------------------------------

    @app.get("/models", tags=["registry"])
    async def list_models(name: str | None = None) -> JSONResponse:
        versions = await run_in_threadpool(registry.list_models, name)
        return JSONResponse({"models": [v.to_json() for v in versions]})

    @app.get("/aliases/{name}", tags=["registry"])
    async def get_alias(name: str) -> JSONResponse:
        alias = await run_in_threadpool(registry.get_alias, name)
        return JSONResponse(alias.to_json())

    @app.put("/aliases/{name}", tags=["registry"])
    async def move_alias(name: str, body: AliasMove) -> JSONResponse:
        """Point an alias at a registered model version (promote)."""
        alias = await run_in_threadpool(registry.promote, body.model_tag, name)
        return JSONResponse(alias.to_json())

    @app.post("/aliases/{name}/rollback", tags=["registry"])
    async def rollback_alias(name: str) -> JSONResponse:
        alias = await run_in_threadpool(registry.rollback, name)
        return JSONResponse(alias.to_json())

    # -- data sets --------------------------------------------------------------------------

    @app.post(
        "/datasets",
        status_code=201,
        tags=["datasets"],
        openapi_extra={
            "requestBody": {
                "content": {"text/csv": {"schema": {"type": "string"}}},
                "required": True,
            }
        },
    )
    async def upload_dataset(request: Request) -> JSONResponse:
        """A CSV body (text/csv), stored by content hash; its id is a `dataset` for POST /runs."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "text/csv":
            raise UserError(
                f"send the CSV as Content-Type: text/csv, not {media or 'nothing'}", field="body"
            )
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes:
            raise TooLarge(f"upload is larger than {settings.max_upload_bytes} bytes", field="body")
        meta, created = await datasets.store_upload(request.stream(), settings.max_upload_bytes)
        return JSONResponse(_dataset_json(meta), status_code=201 if created else 200)

    @app.get("/datasets", tags=["datasets"])
    async def list_datasets() -> JSONResponse:
        """Uploads and the data sets that ship with scikit-learn."""

        def describe_all() -> dict[str, Any]:
            shipped = [dataset_meta(name) for name in SHIPPED]
            return {
                "uploads": [_dataset_json(m) for m in datasets.list_uploads()],
                "shipped": [_dataset_json(m) for m in shipped],
            }

        return JSONResponse(await run_in_threadpool(describe_all))

    return app


def _dataset_json(meta: DatasetMeta) -> dict[str, Any]:
    return {
        "dataset_id": meta.name,
        "sha256": meta.sha256,
        "rows": meta.rows,
        "columns": [{"name": c.name, "type": c.type} for c in meta.columns],
    }

"""The training web service's app: its context, its routers, its error shape, its keys.

A FastAPI app (Starlette underneath; FastAPI adds the OpenAPI document generated from the
same pydantic models the CLI and the store use). Every rule lives below: what a valid request
is (``learning``), the queue (``jobs``), the store and the registry (``store``); the routers
only translate. Published by Caddy under /training/ on the HTTPS origin.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from training.api import datasets, health, metrics, registry, runs, sweeps, ui
from training.api.auth import AdminKeys
from training.api.deps import Context
from training.api.errors import install
from training.api.http import Exchanges
from training.jobs.factory import make_executor
from training.jobs.queue import Executor
from training.serving.keys import KeyStore
from training.settings import ServerSettings
from training.store.registry import Registry
from training.store.revision import checked_database
from training.store.runs import RunStore
from training.store.sweeps import Sweeps

ExecutorFactory = Callable[[RunStore, ServerSettings], Executor]


def create_app(settings: ServerSettings, make_executor: ExecutorFactory = make_executor) -> FastAPI:
    db = checked_database(settings)
    store = RunStore(db)
    # The routes see only the Executor interface: local processes or a Dask cluster.
    executor = make_executor(store, settings)
    job_metrics = metrics.JobMetrics(executor)
    executor.on_done = job_metrics.job_done

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
    keys = KeyStore(settings.keys_path) if settings.require_api_key else None
    app.state.context = Context(
        settings=settings,
        store=store,
        registry=Registry(db),
        sweeps=Sweeps(db),
        executor=executor,
        prometheus=job_metrics.registry,
        keys=keys,
    )
    # The last added runs first: the exchange rules wrap everything, key refusals included.
    app.add_middleware(AdminKeys, keys=keys)
    app.add_middleware(Exchanges)
    install(app)
    for module in (health, metrics, runs, sweeps, registry, datasets):
        app.include_router(module.router)
    ui.install(app, settings, keys)
    return app

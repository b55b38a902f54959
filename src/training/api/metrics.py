"""The training service's Prometheus metrics: jobs queued, running, ended, their durations."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.responses import Response

from training.api.deps import ContextDep
from training.api.errors import responses
from training.jobs.queue import Executor
from training.store.records import RunStatus


class JobMetrics:
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

    def job_done(self, status: RunStatus, seconds: float) -> None:
        self.ended.labels(status).inc()
        self.duration.observe(seconds)


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    # A plain Response: FastAPI gives error entries the route's media type, and ours are JSON.
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format.",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        },
        **responses(checked=False, store=False),
    },
)
async def prometheus(context: ContextDep) -> Response:
    """Jobs queued, running and ended by status, and their durations (never public)."""
    return Response(generate_latest(context.prometheus), media_type=CONTENT_TYPE_LATEST)

"""Liveness and readiness, open without a key (the edge's active health checks read them)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from training.api.deps import ExecutorDep

router = APIRouter(tags=["health"])


# HEAD too (undocumented, as everywhere): the edge's health checks and monitors may use it.
@router.head("/livez", include_in_schema=False)
@router.get("/livez", response_class=PlainTextResponse)
async def livez() -> str:
    """The process answers."""
    return "ok\n"


@router.head("/readyz", include_in_schema=False)
@router.get(
    "/readyz",
    response_class=PlainTextResponse,
    responses={503: {"description": "Starting: the job executor is not running yet."}},
)
async def readyz(executor: ExecutorDep) -> PlainTextResponse:
    """The job executor runs: submissions will be taken up."""
    ready = executor.ready
    return PlainTextResponse("ok\n" if ready else "starting\n", status_code=200 if ready else 503)

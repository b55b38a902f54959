"""What the routers share, handed to each route as a FastAPI dependency.

``create_app`` puts one ``Context`` on the app's state; the dependencies below read it. They
are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a hop
that would cost every request for a mere attribute read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from training.errors import UnsupportedMediaType
from training.jobs.queue import Executor
from training.serving.exchange import is_json, media_type
from training.serving.keys import KeyStore
from training.settings import ServerSettings
from training.store.registry import Registry
from training.store.runs import RunStore
from training.store.sweeps import Sweeps


@dataclass(frozen=True)
class Context:
    settings: ServerSettings
    store: RunStore
    registry: Registry
    sweeps: Sweeps
    executor: Executor
    prometheus: CollectorRegistry
    keys: KeyStore | None = None  # None: keys are not required
    # Recording a submission and queueing it under one lock: the queue's order is the store's.
    submitting: asyncio.Lock = field(default_factory=asyncio.Lock)


def context_of(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


async def _settings(request: Request) -> ServerSettings:
    return context_of(request).settings


async def _store(request: Request) -> RunStore:
    return context_of(request).store


async def _registry(request: Request) -> Registry:
    return context_of(request).registry


async def _executor(request: Request) -> Executor:
    return context_of(request).executor


async def _context(request: Request) -> Context:
    return context_of(request)


def media_of(request: Request) -> bytes:
    """The request's media type (b"" for none), read by the rule both services keep."""
    return media_type(next((v for k, v in request.headers.raw if k == b"content-type"), b""))


async def json_body(request: Request) -> None:
    """A route that takes a JSON body refuses another media type with a 415 (a body without
    a Content-Type is read as JSON)."""
    media = media_of(request)
    if media and not is_json(media):
        raise UnsupportedMediaType(
            f"send the body as Content-Type: application/json, not {media.decode('latin-1')}",
            field="body",
        )


SettingsDep = Annotated[ServerSettings, Depends(_settings)]
StoreDep = Annotated[RunStore, Depends(_store)]


def caller(request: Request) -> str:
    """Who sent the request: the admin key's name when keys are required."""
    return str(getattr(request.state, "caller", "api"))


RegistryDep = Annotated[Registry, Depends(_registry)]
CallerDep = Annotated[str, Depends(caller)]
ExecutorDep = Annotated[Executor, Depends(_executor)]
ContextDep = Annotated[Context, Depends(_context)]

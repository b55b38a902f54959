"""The training API in process: the real app, store and routers; a fake executor behind the
``Executor`` protocol, so no job ever runs (``test_training_service.py`` runs real ones)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from training.api.app import create_app
from training.errors import Busy, Conflict
from training.jobs.queue import ExecutorStatus, JobListener
from training.settings import ServerSettings
from training.store.records import DatasetInfo, RunStatus
from training.store.runs import RunStore

CSV = "size,colour,label\n" + "".join(
    f"{i % 7},{('red', 'blue', 'green')[i % 3]},{'big' if i % 3 == 0 else 'small'}\n"
    for i in range(60)
)
QUICK = {"dataset": "iris", "model": "logistic_regression", "cv": 0}


class FakeExecutor:
    """Takes submissions and cancels queued ones; never runs anything."""

    def __init__(self, store: RunStore, max_queued: int) -> None:
        self.store, self.max_queued = store, max_queued
        self.queue: list[str] = []
        self.on_done: JobListener | None = None
        self.started = False

    @property
    def ready(self) -> bool:
        return self.started

    async def start(self) -> None:
        self.started = True

    def has_room(self, count: int = 1) -> None:
        if len(self.queue) + count > self.max_queued:
            raise Busy(f"{len(self.queue)} trainings are waiting already (TRAINING_MAX_QUEUED)")

    async def submit(self, run_id: str) -> None:
        self.queue.append(run_id)

    async def cancel(self, run_id: str) -> RunStatus:
        if self.store.get_run(run_id).status.ended:
            raise Conflict(f"run {run_id} has ended already")
        self.queue.remove(run_id)
        self.store.finish(run_id, RunStatus.KILLED, error="cancelled before it started")
        return RunStatus.KILLED

    def status(self) -> ExecutorStatus:
        return ExecutorStatus(queued=len(self.queue), running=[])

    async def shutdown(self, grace_s: float) -> None:
        self.started = False


class Api:
    def __init__(self, client: TestClient, store: RunStore, executor: FakeExecutor) -> None:
        self.client, self.store, self.executor = client, store, executor

    def finished_run(self, tag: str) -> str:
        """A run as a worker leaves it: FINISHED with a registered model version."""
        run_id = self.store.create_run(
            experiment="api",
            model_name="logistic_regression",
            task="classification",
            dataset=DatasetInfo(name="iris"),
            params={"C": "1.0"},
        )
        self.store.log_metrics(run_id, [("accuracy", 0.9, 0)])
        self.store.finish(run_id, RunStatus.FINISHED, model_tag=f"{tag}:{run_id}", model_name=tag)
        return run_id


@contextlib.contextmanager
def open_api(data: Path, **settings: Any) -> Iterator[Api]:
    """The app as `training serve` makes it, with a fake executor, served in process."""
    made: list[FakeExecutor] = []

    def fake(store: RunStore, server: ServerSettings) -> FakeExecutor:
        made.append(FakeExecutor(store, server.training_max_queued))
        return made[0]

    server = ServerSettings(data_dir=data, training_max_upload_mb=1, **settings)
    app = create_app(server, make_executor=fake)
    # As uvicorn serves it behind the edge: /training is the root path of every route.
    with TestClient(
        app,
        base_url="http://testserver/training",
        root_path="/training",
        raise_server_exceptions=False,
    ) as client:
        yield Api(client, made[0].store, made[0])

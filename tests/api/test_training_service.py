"""The train-model web service under the real `training serve`: real jobs in their own
processes, restarts, stops, and Caddy in front once. The HTTP rules (4xx, keys, pages, the
registry routes) are checked in process by ``test_routes.py``."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from servers import BIN, Server, base_env, caddy, free_port, serve_training, wait_until
from training.ops.edge import ca_certificate, caddy_env
from training.ops.keys import KeyRing
from training.settings import EdgeSettings
from training.store.db import Database
from training.store.records import DatasetInfo
from training.store.runs import RunStore

pytestmark = pytest.mark.slow

QUICK = {"dataset": "iris", "model": "logistic_regression", "cv": 0}
# Long enough to be caught running: thousands of trees on digits, fold after fold.
SLOW = {"dataset": "digits", "model": "random_forest", "params": {"n_estimators": 3000}, "cv": 5}
TERMINAL = {"FINISHED", "FAILED", "KILLED"}
CSV = "size,colour,label\n" + "".join(
    f"{i % 7 + (5 if i % 3 == 0 else 0)},{('red', 'blue', 'green')[i % 3]},"
    f"{'big' if i % 3 == 0 else 'small'}\n"
    for i in range(60)
)


@dataclass
class Api:
    server: Server
    data: Path
    admin: dict[str, str]
    predict: dict[str, str]

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(
            f"{self.server.url}{path}", json=body, headers=self.admin, timeout=30, **kwargs
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.server.url}{path}", headers=self.admin, timeout=30, **kwargs)

    def run(self, run_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.get(f"/runs/{run_id}").json()
        return body

    def wait(
        self, run_id: str, statuses: set[str] = TERMINAL, timeout: float = 180
    ) -> dict[str, Any]:
        wait_until(
            lambda: self.run(run_id)["status"] in statuses, timeout, f"run {run_id} in {statuses}"
        )
        return self.run(run_id)

    def wait_running(self, run_id: str) -> None:
        """Until the run trains (its worker process has started and reached the folds)."""
        wait_until(
            lambda: (self.run(run_id)["stage"] or "").startswith("cross-validation"), 120, "running"
        )


def make_keys(data: Path) -> tuple[dict[str, str], dict[str, str]]:
    keys = KeyRing(data / "api_keys.json")
    _, admin = keys.create("tests-admin", "admin")
    _, predict = keys.create("tests-predict", "predict")
    return {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {predict}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("api") / "data"
    admin, predict = make_keys(data)
    with serve_training(
        data,
        data.parent / "serve.log",
        REQUIRE_API_KEY="true",
        TRAINING_MAX_JOBS="1",
        TRAINING_MAX_UPLOAD_MB="1",
    ) as server:
        yield Api(server, data, admin, predict)


def test_submit_runs_to_finished_with_metrics_in_the_api_and_the_cli(api: Api) -> None:
    response = api.post("/runs", {**QUICK, "experiment": "api", "tags": {"via": "api"}})
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    assert response.json() == {"run_id": run_id, "status": "QUEUED"}
    assert response.headers["location"].endswith(f"/training/runs/{run_id}")
    run = api.wait(run_id)
    assert run["status"] == "FINISHED" and run["stage"] == "finished" and run["progress"] == 1.0
    assert 0 < run["metrics"]["accuracy"] <= 1 and run["model_tag"].startswith(
        "iris-logistic_regression:"
    )
    assert run["params"]["model"] == "logistic_regression" and run["tags"] == {"via": "api"}
    assert run["submitted_at"] <= run["start_time"] <= run["end_time"]
    listed = subprocess.run(
        [str(BIN / "training"), "runs", "list", "--experiment", "api", "--json"],
        env=base_env(DATA_DIR=str(api.data)),
        capture_output=True,
        text=True,
        check=True,
    )
    [row] = json.loads(listed.stdout)["runs"]
    assert row["id"] == run_id and row["status"] == "FINISHED" and row["metrics"] == run["metrics"]


def test_the_event_stream_shows_stages_and_the_final_status(api: Api) -> None:
    request = {
        "dataset": "digits",
        "model": "random_forest",
        "params": {"n_estimators": 60},
        "cv": 4,
    }
    run_id = api.post("/runs", request).json()["run_id"]
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream(
        "GET", f"{api.server.url}/runs/{run_id}/events", headers=api.admin, timeout=180
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                events.append((kind, json.loads(line[6:])))
                if kind == "end":
                    break
    stages = [data["stage"] for _, data in events]
    assert events[0][1]["status"] in ("QUEUED", "RUNNING")
    assert any(stage.startswith("cross-validation fold") for stage in stages), stages
    kind, last = events[-1]
    assert kind == "end" and last["status"] == "FINISHED" and "accuracy" in last["metrics"]


def test_upload_then_train_on_the_upload(api: Api) -> None:
    headers = {**api.admin, "Content-Type": "text/csv"}
    uploaded = httpx.post(f"{api.server.url}/datasets", content=CSV, headers=headers).json()
    run = api.wait(
        api.post(
            "/runs", {"dataset": uploaded["dataset_id"], "model": "random_forest", "cv": 0}
        ).json()["run_id"]
    )
    assert run["status"] == "FINISHED" and run["dataset"]["sha256"] == uploaded["sha256"]
    assert run["dataset"]["rows"] == 60 and run["dataset"]["classes"] == ["big", "small"]


def test_cancel_a_queued_and_a_running_run(api: Api) -> None:
    running = api.post("/runs", SLOW).json()["run_id"]
    queued = api.post("/runs", QUICK).json()["run_id"]  # one job slot: waits behind the slow one
    cancelled = api.post(f"/runs/{queued}/cancel")
    assert cancelled.json() == {"run_id": queued, "status": "KILLED"}
    assert api.run(queued)["status"] == "KILLED"  # at once
    api.wait_running(running)
    started = time.monotonic()
    assert api.post(f"/runs/{running}/cancel").json()["status"] == "KILLED"
    assert time.monotonic() - started < 15
    run = api.run(running)
    assert run["status"] == "KILLED" and run["model_tag"] is None and run["end_time"]
    runs_with_models = {m["run_id"] for m in api.get("/models").json()["models"]}
    assert not {running, queued} & runs_with_models


def test_metrics_count_jobs(api: Api) -> None:
    text = api.get("/metrics").text
    assert "training_jobs_queued " in text and "training_jobs_running " in text
    assert 'training_jobs_ended_total{status="FINISHED"}' in text
    assert "training_job_duration_seconds_count" in text


# -- one job slot, many submissions ---------------------------------------------------------


def test_submissions_at_once_run_in_submission_order(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve_training(data, tmp_path / "serve.log", TRAINING_MAX_JOBS="1") as server:
        ids: list[str] = []
        lock = threading.Lock()

        def submit(seed: int) -> None:
            response = httpx.post(f"{server.url}/runs", json={**QUICK, "seed": seed}, timeout=60)
            assert response.status_code == 202
            with lock:
                ids.append(response.json()["run_id"])

        # Eight at once race for the submission lock as twenty did (each job costs a process
        # start, ~2.5 s: twenty made this the suite's slowest test).
        threads = [threading.Thread(target=submit, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        api = Api(server, data, {}, {})
        runs = [api.wait(run_id, timeout=400) for run_id in ids]
    assert len(runs) == 8 and {r["status"] for r in runs} == {"FINISHED"}
    by_submission = [r["id"] for r in sorted(runs, key=lambda r: (r["submitted_at"], r["id"]))]
    by_start = [r["id"] for r in sorted(runs, key=lambda r: r["start_time"])]
    assert by_start == by_submission
    for earlier, later in zip(
        sorted(runs, key=lambda r: r["start_time"]),
        sorted(runs, key=lambda r: r["start_time"])[1:],
        strict=False,
    ):
        assert earlier["end_time"] <= later["start_time"]  # one slot: never two at once


# -- restarts and stops ---------------------------------------------------------------------


def test_kill_9_during_a_training_then_a_restart_loses_nothing(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    with serve_training(data, tmp_path / "first.log", port=port, TRAINING_MAX_JOBS="1") as server:
        api = Api(server, data, {}, {})
        slow = api.post("/runs", SLOW).json()["run_id"]
        queued = [api.post("/runs", {**QUICK, "seed": s}).json()["run_id"] for s in range(2)]
        api.wait_running(slow)
        worker = api.run(slow)["pid"]
        # The service and its worker die at once and nothing records anything: the worker is
        # frozen first, so neither its own exit path nor the service's watcher can run.
        os.kill(worker, signal.SIGSTOP)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
        os.kill(worker, signal.SIGKILL)

    assert api_run_in_store(data, slow)["status"] == "RUNNING"  # left behind, as a crash leaves it
    cli_run = RunStore(Database(f"sqlite:///{data / 'sql_app.db'}")).create_run(
        experiment="cli",
        model_name="ridge",
        task="regression",
        dataset=DatasetInfo(name="diabetes"),
        params={},
    )  # a `training train` of someone's shell, running meanwhile: not the service's to judge
    with serve_training(data, tmp_path / "second.log", port=port, TRAINING_MAX_JOBS="1") as server:
        api = Api(server, data, {}, {})
        lost = api.run(slow)
        assert lost["status"] == "FAILED" and "worker lost" in lost["error"]
        assert api.run(cli_run)["status"] == "RUNNING"
        assert [api.wait(run_id)["status"] for run_id in queued] == ["FINISHED", "FINISHED"]
        assert [r["id"] for r in api.get("/runs", params={"status": "RUNNING"}).json()["runs"]] == [
            cli_run
        ]


def test_a_job_whose_service_is_killed_ends_failed_not_killed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve_training(data, tmp_path / "serve.log", TRAINING_MAX_JOBS="1") as server:
        api = Api(server, data, {}, {})
        slow = api.post("/runs", SLOW).json()["run_id"]
        api.wait_running(slow)
        worker = psutil.Process(api.run(slow)["pid"])
        server.proc.send_signal(signal.SIGKILL)  # the service dies; its worker is told so
        server.proc.wait(timeout=10)
        worker.wait(timeout=30)
    run = api_run_in_store(data, slow)
    assert run["status"] == "FAILED" and run["error"] == "the training service stopped", run[
        "error"
    ]
    assert run["model_tag"] is None and run["end_time"]


def api_run_in_store(data: Path, run_id: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(BIN / "training"), "runs", "show", run_id, "--json"],
        env=base_env(DATA_DIR=str(data)),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_sigterm_gives_running_jobs_a_grace_period_then_records_them_killed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve_training(
        data, tmp_path / "serve.log", TRAINING_MAX_JOBS="1", TRAINING_SHUTDOWN_GRACE_S="2"
    ) as server:
        api = Api(server, data, {}, {})
        slow = api.post("/runs", SLOW).json()["run_id"]
        waiting = api.post("/runs", QUICK).json()["run_id"]
        api.wait_running(slow)
        workers = psutil.Process(server.proc.pid).children(recursive=True)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
    assert not [p.pid for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    killed = api_run_in_store(data, slow)
    assert killed["status"] == "KILLED" and killed["model_tag"] is None
    assert api_run_in_store(data, waiting)["status"] == "QUEUED"  # taken up by the next start


# -- through the edge -----------------------------------------------------------------------


def test_through_caddy_https_with_the_upload_limit_following_the_setting(
    api: Api, tmp_path: Path
) -> None:
    settings = EdgeSettings(
        https_port=free_port(), http_port=free_port(), caddy_data_dir=tmp_path / "caddy"
    )
    env = caddy_env(
        settings,
        service_ports=[free_port()],
        max_body_bytes=1_048_576,
        service_workers=1,
        training_port=int(api.server.url.rsplit(":", 1)[1]),
        max_upload_mb=1,
    )
    with caddy(env, tmp_path / "caddy.log"):
        tls = ssl.create_default_context(cafile=ca_certificate(tmp_path / "caddy"))
        edge = f"https://127.0.0.1:{settings.https_port}/training"
        response = httpx.post(f"{edge}/runs", json=QUICK, headers=api.admin, verify=tls, timeout=30)
        assert response.status_code == 202
        location = response.headers["location"]
        assert location == f"{edge}/runs/{response.json()['run_id']}"
        assert (
            httpx.get(location, headers=api.admin, verify=tls).json()["id"]
            == response.json()["run_id"]
        )
        with httpx.stream(
            "GET", f"{location}/events", headers=api.admin, verify=tls, timeout=120
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert any(line.startswith("event: end") for line in stream.iter_lines())
        big = b"a,b\n" + b"1,2\n" * 300_000
        for body in (big, iter([big[:600_000], big[600_000:]])):
            refused = httpx.post(
                f"{edge}/datasets",
                content=body,
                verify=tls,
                headers={**api.admin, "Content-Type": "text/csv"},
            )
            assert (
                refused.status_code == 413 and refused.json()["error"] == "Request Entity Too Large"
            )
        small = httpx.post(
            f"{edge}/datasets",
            content=CSV.encode(),
            verify=tls,
            headers={**api.admin, "Content-Type": "text/csv"},
        )
        assert small.status_code in (200, 201)
        for private in (
            "/docs",
            "/metrics",
            "/openapi.json",
            "/training/metrics",
            "/training/docs",
        ):
            hidden = httpx.get(f"{edge}{private}", headers=api.admin, verify=tls)
            assert hidden.status_code == 404, private

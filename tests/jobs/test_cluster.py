"""Training past one machine: a real `training scheduler`, two `training worker` processes
standing in for two hosts (each its own folder, an empty BentoML home, no data folder, a run
store URL that points nowhere, an address the scheduler cannot dial), and `training serve`
with TRAINING_CLUSTER. The workers compute; the service alone records."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from servers import BIN, REPO, Cluster, Server, base_env, cluster, serve_training, wait_until
from training.store.db import Database
from training.store.records import DatasetInfo, RunStatus
from training.store.runs import RunStore

pytestmark = pytest.mark.slow

TERMINAL = {"FINISHED", "FAILED", "KILLED"}
QUICK = {"dataset": "iris", "model": "logistic_regression", "cv": 0}
# Caught running for as long as a test needs: thousands of trees, fold after fold.
SLOW = {"dataset": "digits", "model": "random_forest", "params": {"n_estimators": 3000}, "cv": 5}


@dataclass
class Api:
    server: Server
    data: Path

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.server.url}{path}", json=body, timeout=60, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        response = httpx.get(f"{self.server.url}{path}", timeout=30, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def submit(self, body: dict[str, Any]) -> str:
        response = self.post("/runs", body)
        assert response.status_code == 202, response.text
        run_id: str = response.json()["run_id"]
        return run_id

    def wait(self, run_id: str, statuses: set[str] = TERMINAL, timeout: float = 120) -> Any:
        wait_until(lambda: self.get(f"/runs/{run_id}")["status"] in statuses, timeout, run_id)
        return self.get(f"/runs/{run_id}")

    def wait_running(self, run_id: str) -> Any:
        """Until its worker has reported the folds: the stage comes live from the cluster."""
        wait_until(
            lambda: (self.get(f"/runs/{run_id}")["stage"] or "").startswith("cross-validation"),
            120,
            f"{run_id} training",
        )
        return self.get(f"/runs/{run_id}")


def streamed_until_training(api: Api, run_id: str) -> dict[str, Any]:
    """The run's event stream, read until a stage its worker reported (a fold) arrives."""
    seen: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{api.server.url}/runs/{run_id}/events", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if (seen[-1]["stage"] or "").startswith("cross-validation"):
                    return seen[-1]
    raise AssertionError(f"the stream ended before the folds: {seen}")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def api(nodes: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("service") / "data"
    with serve_training(data, data.parent / "serve.log", TRAINING_CLUSTER=nodes.address) as server:
        yield Api(server, data)


def stored_models(home: Path) -> list[str]:
    models = home / "models"
    return sorted(
        f"{name.name}:{version.name}"
        for name in (models.iterdir() if models.is_dir() else [])
        for version in name.iterdir()
        if version.is_dir()
    )


def test_a_sweep_of_six_runs_across_both_workers_and_only_the_service_keeps_models(
    api: Api, nodes: Cluster
) -> None:
    body = {
        "dataset": "wine",
        "model": "random_forest",
        "grid": {"n_estimators": [5, 10, 15], "max_depth": [2, 4]},
        "cv": 2,
    }
    response = api.post("/sweeps", body)
    assert response.status_code == 202, response.text
    sweep_id, run_ids = response.json()["sweep_id"], response.json()["run_ids"]
    assert len(run_ids) == 6 and response.headers["location"].endswith(f"/sweeps/{sweep_id}")
    wait_until(lambda: api.get(f"/sweeps/{sweep_id}")["status"] == "FINISHED", 120, "sweep")
    sweep = api.get(f"/sweeps/{sweep_id}")
    assert sweep["progress"] == {"done": 6, "total": 6} and sweep["metric"] == "accuracy"
    assert [run["id"] for run in sweep["runs"]] == run_ids
    assert {run["worker"] for run in sweep["runs"]} == {"w1", "w2"}  # spread over both
    assert sweep["best"]["value"] == max(run["value"] for run in sweep["runs"])
    assert {json.dumps(run["params"], sort_keys=True) for run in sweep["runs"]} == {
        json.dumps({"max_depth": str(d), "n_estimators": str(n)}, sort_keys=True)
        for n in (5, 10, 15)
        for d in (2, 4)
    }
    listed = api.get("/runs", params={"filter": f"sweep = {sweep_id}"})["runs"]
    assert sorted(run["id"] for run in listed) == sorted(run_ids)
    run = api.get(f"/runs/{run_ids[0]}")
    assert run["sweep"] == sweep_id and run["worker"] in ("w1", "w2")
    assert run["environment"]["libraries"]["scikit-learn"]  # the worker's versions came back
    history = [key for key in run["metrics"] if key.startswith("cv_fold_")]
    assert history and "cv_accuracy_mean" in run["metrics"]
    # Models in the service's store only; the workers kept nothing of ours.
    tags = stored_models(api.data.parent / "bentoml")
    assert {r["model_tag"] for r in sweep["runs"]} <= set(tags) and len(tags) >= 6
    for name in ("w1", "w2"):
        assert nodes.files_of(name) == []
    assert api.get("/sweeps")["sweeps"][0]["id"] == sweep_id


def test_an_upload_travels_to_a_worker_and_the_memory_cap_fails_only_its_run(
    api: Api, nodes: Cluster
) -> None:
    # A text column of 20,000 distinct values: one-hot encoded densely it needs ~2.5 GB,
    # past the workers' 1,536 MB cap.
    csv = "code,size,label\n" + "".join(
        f"c{i:05d},{i % 13},{'big' if i % 3 else 'small'}\n" for i in range(20_000)
    )
    uploaded = api.post(
        "/datasets", content=csv.encode(), headers={"Content-Type": "text/csv"}
    ).json()
    hog = api.submit({"dataset": uploaded["dataset_id"], "model": "logistic_regression", "cv": 0})
    quick = api.submit(QUICK)
    failed = api.wait(hog)
    assert failed["status"] == "FAILED" and "MemoryError" in failed["error"], failed["error"]
    assert failed["dataset"]["sha256"] == uploaded["sha256"] and failed["model_tag"] is None
    assert api.wait(quick)["status"] == "FINISHED"
    assert nodes.names() == {"w1", "w2"}  # the worker went on


def test_cancel_a_waiting_run_at_once_and_a_running_one_within_ten_seconds(
    api: Api, nodes: Cluster
) -> None:
    running = [api.submit(SLOW), api.submit(SLOW)]  # one on each worker
    waiting = api.submit(QUICK)
    cancelled = api.post(f"/runs/{waiting}/cancel")
    assert cancelled.json() == {"run_id": waiting, "status": "KILLED"}
    assert api.get(f"/runs/{waiting}")["status"] == "KILLED"
    assert streamed_until_training(api, running[0])["status"] == "RUNNING"  # live from the worker
    for run_id in running:
        run = api.wait_running(run_id)
        assert run["worker"] in ("w1", "w2") and run["status"] == "RUNNING"
        started = time.monotonic()
        assert api.post(f"/runs/{run_id}/cancel").json()["status"] == "KILLED"
        assert time.monotonic() - started < 10
        run = api.get(f"/runs/{run_id}")
        assert run["status"] == "KILLED" and run["model_tag"] is None and run["end_time"]
    nodes.wait_for({"w1", "w2"})  # each stopped worker was replaced by its nanny
    assert api.wait(api.submit(QUICK))["status"] == "FINISHED"


def test_a_worker_lost_mid_job_fails_that_run_and_the_others_go_on(
    api: Api, nodes: Cluster
) -> None:
    doomed = api.submit(SLOW)
    victim = api.wait_running(doomed)["worker"]
    other = api.submit({**QUICK, "seed": 7})
    nodes.kill_worker(victim)
    lost = api.wait(doomed, timeout=60)
    assert lost["status"] == "FAILED" and lost["error"].startswith("worker lost"), lost["error"]
    assert lost["model_tag"] is None
    survivor = api.wait(other)
    assert survivor["status"] == "FINISHED" and survivor["worker"] != victim
    nodes.start_worker(victim)
    nodes.wait_for({"w1", "w2"})


def test_a_restarted_service_takes_up_its_runs_on_the_cluster(
    nodes: Cluster, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = {"TRAINING_CLUSTER": nodes.address}
    medium = {"dataset": "digits", "model": "random_forest", "params": {"n_estimators": 150}}
    with serve_training(data, tmp_path / "first.log", **env) as server:
        api = Api(server, data)
        going_on = api.submit({**medium, "cv": 3})
        api.wait_running(going_on)
        server.proc.send_signal(signal.SIGKILL)  # no shutdown: the cluster keeps the job
        server.proc.wait(timeout=10)
    store = RunStore(Database(f"sqlite:///{data / 'sql_app.db'}"))
    forgotten = store.create_run(  # sent to a cluster that no longer knows it
        experiment="default",
        model_name="ridge",
        task="regression",
        dataset=DatasetInfo(name="diabetes"),
        params={},
        status=RunStatus.QUEUED,
        request={"dataset": "diabetes", "model": "ridge"},
    )
    store.start_queued(forgotten, None)
    with serve_training(data, tmp_path / "second.log", **env) as server:
        api = Api(server, data)
        lost = api.wait(forgotten, timeout=30)
        assert lost["status"] == "FAILED" and lost["error"].startswith("worker lost")
        run = api.wait(going_on)
        assert run["status"] == "FINISHED" and run["worker"] in ("w1", "w2")
        assert run["model_tag"] in stored_models(data.parent / "bentoml")


def test_training_sweep_on_the_cluster_with_postgresql_and_a_random_search(
    nodes: Cluster, postgres_url: str, tmp_path: Path
) -> None:
    env = base_env(
        DATA_DIR=str(tmp_path / "data"),
        BENTOML_HOME=str(tmp_path / "bentoml"),
        DATABASE_URL=postgres_url,
        TRAINING_CLUSTER=nodes.address,
    )
    command = [
        str(BIN / "training"), "sweep", "--dataset", "iris", "--model", "logistic_regression",
        "--range", "C=log:0.01..10", "--samples", "3", "--cv", "0", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = json.loads(done.stdout)
    assert sweep["status"] == "FINISHED" and sweep["progress"] == {"done": 3, "total": 3}
    values = [float(run["params"]["C"]) for run in sweep["runs"]]
    assert all(0.01 <= value <= 10 for value in values) and len(set(values)) == 3
    assert {run["worker"] for run in sweep["runs"]} <= {"w1", "w2"}
    assert "3 of 3 runs ended" in done.stderr
    listed = subprocess.run(
        [str(BIN / "training"), "runs", "list", "--filter", f"sweep = {sweep['id']}", "--json"],
        env=env, cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert len(json.loads(listed.stdout)["runs"]) == 3

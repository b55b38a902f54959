"""The training API in process: every 4xx rule, keys, pages, registry routes and the OpenAPI
document, over the real store and routers with a fake executor behind the ``Executor``
protocol (jobs never run here; ``test_api.py`` runs real ones)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from socket import gethostname as hostname
from typing import Any

import psutil
import pytest
from inprocess import CSV, QUICK, Api, open_api
from sqlalchemy import update

from training.store.tables import Run


def test_a_submission_is_queued_recorded_and_located(api: Api) -> None:
    response = api.client.post("/runs", json={**QUICK, "tags": {"via": "api"}})
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    assert response.json() == {"run_id": run_id, "status": "QUEUED"}
    assert response.headers["location"] == f"http://testserver/training/runs/{run_id}"
    assert api.executor.queue == [run_id]
    run = api.client.get(f"/runs/{run_id}").json()
    assert run["status"] == "QUEUED" and run["stage"] == "queued" and run["tags"] == {"via": "api"}
    assert run["request"]["dataset"] == "iris" and run["duration_s"] is None


@pytest.mark.parametrize(
    ("body", "status", "field", "message"),
    [
        ({"dataset": "/etc/passwd", "model": "ridge"}, 400, "dataset", "paths on the server"),
        ({"dataset": "iris", "model": "svm"}, 400, "model", "unknown classification model 'svm'"),
        (
            {"dataset": "iris", "model": "random_forest", "params": {"max_depth": -1}},
            400,
            "params",
            "bad parameter",
        ),
        (
            {"dataset": "iris", "model": "random_forest", "params": {"depth": 3}},
            400,
            "params",
            "unknown parameter",
        ),
        (
            {"dataset": "iris", "target": "species", "model": "random_forest"},
            400,
            "target",
            "column 'species'",
        ),
        ({"dataset": "iris", "model": "random_forest", "cv": 1}, 400, "cv", "cv must be 0"),
        ({"dataset": "iris", "model": "random_forest", "colour": "red"}, 400, "colour", "Extra"),
        ({"dataset": "iris"}, 400, "model", "Field required"),
        ({"dataset": "ds_0000000000000000", "model": "ridge"}, 404, "dataset", "no uploaded"),
    ],
)
def test_each_bad_submission_is_a_4xx_naming_the_field(
    api: Api, body: dict[str, Any], status: int, field: str, message: str
) -> None:
    response = api.client.post("/runs", json=body)
    assert response.status_code == status
    payload = response.json()
    assert message in payload["error"] and payload["detail"][0]["field"] == field
    assert api.executor.queue == [] and api.client.get("/runs").json()["runs"] == []


def test_a_full_queue_answers_429_with_retry_after(env: Path) -> None:
    with open_api(env, training_max_queued=2) as api:
        assert [api.client.post("/runs", json=QUICK).status_code for _ in range(2)] == [202, 202]
        refused = api.client.post("/runs", json=QUICK)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "TRAINING_MAX_QUEUED" in refused.json()["error"]
        assert len(api.client.get("/runs").json()["runs"]) == 2  # the refused one left no run


def test_not_found_conflict_and_malformed_bodies(api: Api) -> None:
    assert api.client.get("/runs/0123456789abcdef").status_code == 404
    assert api.client.post("/runs/0123456789abcdef/cancel").status_code == 404
    malformed = api.client.post("/runs", content=b"{", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"].startswith("invalid request")
    finished = api.finished_run("iris-logistic_regression")
    conflict = api.client.post(f"/runs/{finished}/cancel")
    assert conflict.status_code == 409 and "ended already" in conflict.json()["error"]
    assert api.client.get("/aliases/nothing").status_code == 404
    bad_filter = api.client.get("/runs", params={"filter": "metrics.accuracy > high"})
    assert bad_filter.status_code == 400 and bad_filter.json()["detail"][0]["field"] == "filter"
    assert api.client.get("/runs", params={"limit": 0}).status_code == 400
    assert api.client.get("/runs", params={"page_token": "forged"}).status_code == 400
    nowhere = api.client.get("/nowhere", headers={"X-Request-ID": "edge-7"})
    assert nowhere.json() == {"error": "Not Found", "detail": [], "request_id": "edge-7"}
    wrong_method = api.client.delete("/runs")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "Method Not Allowed"


def test_cancel_a_queued_run(api: Api) -> None:
    run_id = api.client.post("/runs", json=QUICK).json()["run_id"]
    assert api.client.post(f"/runs/{run_id}/cancel").json() == {
        "run_id": run_id,
        "status": "KILLED",
    }
    run = api.client.get(f"/runs/{run_id}").json()
    assert run["status"] == "KILLED" and run["end_time"] and run["model_tag"] is None


def test_the_event_stream_of_an_ended_run_is_one_end_event(api: Api) -> None:
    run_id = api.finished_run("iris-logistic_regression")
    with api.client.stream("GET", f"/runs/{run_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in stream.iter_lines() if line and not line.startswith(":")]
    assert lines[0] == "event: end"
    data = json.loads(lines[1].removeprefix("data: "))
    assert data["status"] == "FINISHED" and data["metrics"] == {"accuracy": 0.9}
    assert data["model_tag"] == f"iris-logistic_regression:{run_id}"


def test_every_route_but_health_needs_an_admin_key(
    keyed: tuple[Api, dict[str, str], dict[str, str]],
) -> None:
    api, admin, predict = keyed
    assert api.client.get("/livez").status_code == 200
    assert api.client.get("/readyz").text == "ok\n"
    for method, path in (
        ("GET", "/runs"),
        ("POST", "/runs"),
        ("GET", "/runs/0123456789abcdef"),
        ("GET", "/models"),
        ("PUT", "/aliases/production"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/metrics"),
        ("POST", "/datasets"),
        ("GET", "/datasets"),
    ):
        missing = api.client.request(method, path)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        wrong = api.client.request(
            method, path, headers={"Authorization": "Bearer tk_000000000000_" + "x" * 43}
        )
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid or revoked API key"
        scoped = api.client.request(method, path, headers=predict)
        assert scoped.status_code == 403 and "admin" in scoped.json()["error"], path
    assert api.client.get("/runs", headers=admin).json() == {"runs": [], "next_page_token": None}


def test_models_aliases_rollback_and_pages(api: Api) -> None:
    first, second = (api.finished_run(f"iris-m{i}") for i in (1, 2))
    tags = [api.client.get(f"/runs/{r}").json()["model_tag"] for r in (first, second)]
    listed = api.client.get("/models").json()["models"]
    assert [m["tag"] for m in listed] == tags[::-1] and listed[0]["run_id"] == second
    moved = api.client.put("/aliases/staging", json={"model_tag": tags[0]})
    assert moved.status_code == 200 and moved.json()["model_tag"] == tags[0]
    api.client.put("/aliases/staging", json={"model_tag": tags[1]})
    assert api.client.get("/models").json()["models"][0]["aliases"] == ["staging"]
    rolled = api.client.post("/aliases/staging/rollback").json()
    assert rolled["model_tag"] == tags[0]
    history = api.client.get("/aliases/staging").json()["history"]
    assert [m["action"] for m in history] == ["promote", "promote", "rollback"]
    assert {m["requested_by"] for m in history} == {"api"}  # keys off: no key to name
    assert history[0]["moved_at"].endswith("+00:00")  # the records' one time format
    assert api.client.get("/deployments").json() == {"deployments": []}  # no stack serves it
    for bad in ({"alias": "Bad Name"}, {"limit": 0}):
        refused = api.client.get("/deployments", params=bad)
        field = refused.json()["detail"][0]["field"]
        assert refused.status_code == 400 and field.removeprefix("query.") in bad
    ghost = api.client.put("/aliases/staging", json={"model_tag": "ghost:v1"})
    assert ghost.status_code == 404 and ghost.json()["detail"][0]["field"] == "model_tag"
    bad_name = api.client.put("/aliases/Bad Name", json={"model_tag": tags[0]})
    assert bad_name.status_code == 400 and bad_name.json()["detail"][0]["field"] == "alias"
    no_body = api.client.put("/aliases/staging", json={})
    assert no_body.status_code == 400 and no_body.json()["detail"][0]["field"] == "model_tag"
    page = api.client.get("/runs", params={"limit": 1, "status": "finished"}).json()
    rest = api.client.get(
        "/runs", params={"limit": 1, "status": "FINISHED", "page_token": page["next_page_token"]}
    ).json()
    assert [page["runs"][0]["id"], rest["runs"][0]["id"]] == [second, first]
    assert rest["next_page_token"] is None


def test_upload_then_list_and_submit_it(api: Api) -> None:
    headers = {"Content-Type": "text/csv"}
    first = api.client.post("/datasets", content=CSV, headers=headers)
    assert first.status_code == 201
    uploaded = first.json()
    assert uploaded["dataset_id"].startswith("ds_") and uploaded["rows"] == 60
    assert uploaded["columns"] == [
        {"name": "size", "type": "number"},
        {"name": "colour", "type": "string"},
        {"name": "label", "type": "string"},
    ]
    again = api.client.post("/datasets", content=CSV, headers=headers)
    assert again.status_code == 200 and again.json() == uploaded  # the same file is one data set
    listing = api.client.get("/datasets").json()
    assert [u["dataset_id"] for u in listing["uploads"]] == [uploaded["dataset_id"]]
    assert {s["dataset_id"] for s in listing["shipped"]} >= {"iris", "digits", "diabetes"}
    submitted = api.client.post(
        "/runs", json={"dataset": uploaded["dataset_id"], "model": "random_forest"}
    )
    assert submitted.status_code == 202
    run = api.client.get(f"/runs/{submitted.json()['run_id']}").json()
    assert run["dataset"]["name"] == uploaded["dataset_id"] and run["params"]["target"] == "label"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"a,b\n1,2\n3,4,5\n", "text/csv", 422, "line 3: expected 2 fields, found 3"),
        (b"", "text/csv", 422, "the upload is empty"),
        (b"a,a\n1,2\n", "text/csv", 422, "line 1: duplicate column names"),
        (b"\xff\xfe,b\n", "text/csv", 422, "not UTF-8"),
        (b"a\n1\n", "text/csv", 422, "a target and at least one feature"),
        (b"a,b\n1,2\n", "application/json", 415, "Content-Type: text/csv"),
        (b"a,b\n" + b"1,2\n" * 300_000, "text/csv", 413, "larger than 1048576 bytes"),
    ],
)
def test_bad_uploads(api: Api, body: bytes, content_type: str, status: int, message: str) -> None:
    response = api.client.post("/datasets", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status and message in response.json()["error"]
    assert response.json()["detail"][0]["field"] == "body"
    assert api.client.get("/datasets").json()["uploads"] == []


def test_a_chunked_upload_over_the_limit_is_a_413_and_leaves_nothing(api: Api, env: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"a,b\n"
        for _ in range(40):
            yield b"1,2\n" * 8192

    response = api.client.post("/datasets", content=chunks(), headers={"Content-Type": "text/csv"})
    assert response.status_code == 413
    assert not list((env / "datasets" / "incoming").iterdir())


def test_metrics_show_the_queue(api: Api) -> None:
    api.client.post("/runs", json=QUICK)
    text = api.client.get("/metrics").text
    assert "training_jobs_queued 1.0" in text and "training_jobs_running 0.0" in text


def test_the_openapi_document_shows_every_response_and_error_shape(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ErrorBody" in schemas
    operations = [
        (path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()
    ]
    assert len(operations) == 19  # 15, and the four sweep routes
    for path, method, op in operations:
        answers = op["responses"]
        success = [code for code in answers if code.startswith("2")]
        assert success and all(answers[code].get("content") for code in success), (path, method)
        if path not in ("/livez", "/readyz"):
            assert {"401", "403"} <= set(answers), (path, method)
        for code in (c for c in answers if c.startswith("4")):
            body = answers[code]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/ErrorBody"}, (path, method, code)
    run = spec["paths"]["/runs/{run_id}"]["get"]["responses"]["200"]
    assert run["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RunInfo"}
    assert set(schemas["RunInfo"]["properties"]) >= {"status", "metrics", "duration_s"}
    assert schemas["RunStatus"]["enum"] == ["QUEUED", "RUNNING", "FINISHED", "FAILED", "KILLED"]
    assert set(schemas["DeploymentInfo"]["properties"]) >= {
        "alias", "from_tag", "to_tag", "requested_by", "started_at", "live_at", "result", "error"
    }  # fmt: skip


def test_a_sweep_is_queued_followed_listed_and_cancelled_whole(api: Api) -> None:
    body = {**QUICK, "model": "random_forest", "grid": {"max_depth": [2, 4], "n_estimators": [5]}}
    response = api.client.post("/sweeps", json=body)
    assert response.status_code == 202, response.text
    sweep_id, run_ids = response.json()["sweep_id"], response.json()["run_ids"]
    assert api.executor.queue == run_ids and len(run_ids) == 2
    assert response.headers["location"] == f"http://testserver/training/sweeps/{sweep_id}"
    sweep = api.client.get(f"/sweeps/{sweep_id}").json()
    assert sweep["status"] == "QUEUED" and sweep["progress"] == {"done": 0, "total": 2}
    assert [r["params"] for r in sweep["runs"]] == [
        {"max_depth": "2", "n_estimators": "5"},
        {"max_depth": "4", "n_estimators": "5"},
    ]
    assert sweep["best"] is None and sweep["request"]["grid"] == body["grid"]
    listed = api.client.get("/runs", params={"filter": f"sweep = {sweep_id}"}).json()["runs"]
    assert sorted(r["id"] for r in listed) == sorted(run_ids)
    assert all(r["sweep"] == sweep_id for r in listed)
    assert [s["id"] for s in api.client.get("/sweeps").json()["sweeps"]] == [sweep_id]
    cancelled = api.client.post(f"/sweeps/{sweep_id}/cancel").json()
    assert cancelled["status"] == "KILLED" and cancelled["progress"] == {"done": 2, "total": 2}
    assert {r["status"] for r in cancelled["runs"]} == {"KILLED"} and api.executor.queue == []
    assert api.client.post(f"/sweeps/{sweep_id}/cancel").status_code == 409
    assert api.client.get("/sweeps/0123456789abcdef").status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"grid": {"max_depth": [2]}, "dataset": "/etc/passwd"}, "dataset", "paths on the server"),
        ({"ranges": {"max_depth": "8..2"}, "samples": 3}, "ranges", "low end"),
        ({"ranges": {"max_depth": "2..8"}}, "samples", "give samples"),
        ({"grid": {"max_depth": [2, -3]}}, "grid", "max_depth=-3"),
        ({"grid": {"max_depth": [2]}, "metric": "r2"}, "metric", "not a classification"),
        ({"grid": {"max_depth": list(range(1, 300))}}, "grid", "1 to 100 values"),
        ({"grid": {"max_depth": [2]}, "samples": 0}, "samples", "greater than or equal"),
    ],
)
def test_each_bad_sweep_is_a_400_naming_the_field(
    api: Api, body: dict[str, Any], field: str, message: str
) -> None:
    response = api.client.post("/sweeps", json={**QUICK, "model": "random_forest", **body})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"] and response.json()["detail"][0]["field"] == field
    assert api.executor.queue == [] and api.client.get("/sweeps").json()["sweeps"] == []


def test_a_sweep_larger_than_the_queue_has_room_for_is_refused_whole(env: Path) -> None:
    with open_api(env, training_max_queued=3) as api:
        # Larger than the queue can ever hold: a 400 (retrying would never help)...
        grid = {"max_depth": [1, 2, 3, 4]}
        never = api.client.post("/sweeps", json={**QUICK, "model": "random_forest", "grid": grid})
        assert never.status_code == 400 and "TRAINING_MAX_QUEUED" in never.json()["error"]
        assert never.json()["detail"][0]["field"] == "grid"
        # ... and larger than the room left now: a 429 with Retry-After.
        assert api.client.post("/runs", json=QUICK).status_code == 202
        grid = {"max_depth": [1, 2, 3]}
        later = api.client.post("/sweeps", json={**QUICK, "model": "random_forest", "grid": grid})
        assert later.status_code == 429 and "TRAINING_MAX_QUEUED" in later.json()["error"]
        assert len(api.client.get("/runs").json()["runs"]) == 1


def test_a_sweep_run_by_a_training_sweep_process_is_not_cancelled_behind_its_back(
    api: Api,
) -> None:
    """Its runs are that process's: the API says where to stop it, and marks nothing."""
    body = {**QUICK, "model": "random_forest", "grid": {"max_depth": [1, 2]}}
    sweep_id = api.client.post("/sweeps", json=body).json()["sweep_id"]
    owner = subprocess.Popen(["sleep", "60"])
    try:
        with api.store.db.write() as session:
            where = Run.sweep_id == sweep_id
            mark = f"{hostname()}:{owner.pid}:{psutil.Process(owner.pid).create_time():.2f}"
            session.execute(update(Run).where(where).values(owner=mark))
        refused = api.client.post(f"/sweeps/{sweep_id}/cancel")
        assert refused.status_code == 409 and "training sweep" in refused.json()["error"]
        assert api.client.get(f"/sweeps/{sweep_id}").json()["status"] == "QUEUED"
    finally:
        owner.kill()
        owner.wait()
    assert api.client.post(f"/sweeps/{sweep_id}/cancel").json()["status"] == "KILLED"  # it died

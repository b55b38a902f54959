"""Every answer of the training API designed, in process: request ids everywhere, one error
shape for framework errors too, no 500 for anything a caller sends, a busy store as a 503,
no key in the log. (A PostgreSQL server stopped mid-request is in ``test_store_down.py``.)"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inprocess import QUICK, Api, open_api

from training.cli.app import main

ACCESS = "training.access"


def send(api: Api, method: str, path: str, body: Any) -> Any:
    """JSON as a client would write it: a lone surrogate escaped ("\\ud800"), as JSON allows."""
    content = None if body is None else json.dumps(body)
    headers = {"Content-Type": "application/json"}
    return api.client.request(method, path, content=content, headers=headers)


def test_every_error_carries_the_request_id_in_body_header_and_access_line(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS):
        missing = api.client.get("/runs/0123456789abcdef", headers={"X-Request-ID": "edge-1"})
        made = api.client.get("/runs/nope", headers={"X-Request-ID": "not a valid id!"})
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "edge-1"
    assert missing.json()["request_id"] == "edge-1" and missing.json()["detail"] == []
    fresh = made.headers["x-request-id"]
    assert len(fresh) == 32 and made.json()["request_id"] == fresh
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS]
    assert any(
        "GET /training/runs/0123456789abcdef 404" in x and "request_id=edge-1" in x for x in lines
    )
    assert any(f"request_id={fresh}" in line for line in lines)


def test_framework_answers_in_the_one_shape(api: Api) -> None:
    wrong = api.client.delete("/runs")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, POST"
    assert set(wrong.json()) == {"error", "detail", "request_id"}
    for path in ("/livez", "/readyz"):
        head = api.client.head(path)
        assert head.status_code == 200 and head.content == b""
    text = api.client.post("/runs", content=b"dataset=iris", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and text.json()["detail"][0]["field"] == "body"
    form = api.client.put(
        "/aliases/production",
        content=b"model_tag=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    oversize = api.client.get("/runs", headers={"X-Big": "a" * 20_000})
    assert oversize.status_code == 431 and oversize.json()["request_id"]


def test_a_crash_is_a_json_500_naming_its_request_id_and_logged_once(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(run_id: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.executor, "submit", broken)
    with caplog.at_level(logging.INFO):
        response = api.client.post("/runs", json=QUICK, headers={"X-Request-ID": "rid-9"})
    assert response.status_code == 500 and "secret" not in response.text
    assert response.json()["request_id"] == "rid-9" and "rid-9" in response.json()["error"]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "rid-9" in tracebacks[0].getMessage()
    assert any("POST /training/runs 500" in r.getMessage() for r in caplog.records)


def test_no_query_string_and_no_key_reach_the_access_log(
    keyed: tuple[Api, dict[str, str], dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    api, admin, _ = keyed
    key = admin["Authorization"].removeprefix("Bearer ")
    secret = key.split("_", 2)[2]  # tk_<id>_<secret>; the secret may hold "_" itself
    with caplog.at_level(logging.DEBUG):
        api.client.get("/runs", params={"api_key": key, "token": key})
        api.client.get("/runs", params={"key": key}, headers=admin)
        api.client.get(f"/runs/{key}", headers=admin)
        api.client.get("/runs", headers={"X-API-Key": key, "Cookie": f"key={key}"})
        api.client.post("/runs", json={**QUICK, "tags": {"key": key}}, headers=admin)
    served = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("http"))
    assert secret not in served  # (the test's own HTTP client logs its URLs: not the service)
    assert f"/training/runs/tk_{key.split('_')[1]}_<redacted>" in served


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/runs", {**QUICK, "tags": {"team": "a\x00b"}}, "tags"),
        ("POST", "/runs", {**QUICK, "tags": {"a\ud800": "b"}}, "tags"),
        ("POST", "/runs", {**QUICK, "experiment": "lab\x00"}, "experiment"),
        ("POST", "/runs", {**QUICK, "params": {"C\x00": 1}}, "params"),
        ("POST", "/runs", {**QUICK, "params": {"solver": "lbfgs\ud800"}}, "params"),
        ("PUT", "/aliases/production", {"model_tag": "m:\x00"}, "model_tag"),
        ("GET", "/runs?filter=tags.team%20%3D%20%27a%00%27", None, "filter"),
        ("GET", "/runs?experiment=a%00", None, "experiment"),
        ("GET", "/models?name=a%00", None, "name"),
    ],
)
def test_text_the_store_cannot_hold_is_a_400_naming_the_field(
    api: Api, method: str, path: str, body: Any, field: str
) -> None:
    response = send(api, method, path, body)
    assert response.status_code == 400, response.text
    assert response.json()["detail"][0]["field"].startswith(field)
    assert api.client.get("/runs").json()["runs"] == []  # nothing half-written


def test_a_search_past_its_ceiling_is_a_400_in_the_api_and_exit_2_in_the_cli(
    api: Api, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    many = " and ".join(f"metrics.m{i} > 0" for i in range(21))
    for text in (many, "metrics.m > 0 and " * 150 + "metrics.m > 0"):
        response = api.client.get("/runs", params={"filter": text})
        assert response.status_code == 400 and response.json()["detail"][0]["field"] == "filter"
        assert main(["runs", "list", "--filter", text]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: filter: at most") and err.count("\n") == 1
    twenty = " and ".join(f"metrics.m{i} > 0" for i in range(20))
    assert api.client.get("/runs", params={"filter": twenty}).json()["runs"] == []


def test_a_locked_store_is_a_503_with_retry_after_and_nothing_half_written(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQLITE_BUSY_TIMEOUT_MS", "200")
    with open_api(env, sqlite_busy_timeout_ms=200) as api:
        run_id = api.finished_run("iris-m")
        holder = sqlite3.connect(env / "sql_app.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            for response in (
                api.client.post("/runs", json=QUICK),
                api.client.put("/aliases/production", json={"model_tag": f"iris-m:{run_id}"}),
            ):
                assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
                assert "busy or unreachable" in response.json()["error"]
            assert api.client.get("/runs").status_code == 200  # readers are not held up
            assert main(["promote", f"iris-m:{run_id}"]) == 75
            err = capsys.readouterr().err
            assert err.startswith("error: the run store is busy") and err.count("\n") == 1
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert api.executor.queue == [] and len(api.client.get("/runs").json()["runs"]) == 1
        assert api.client.post("/runs", json=QUICK).status_code == 202


# -- nothing a caller sends is a 5xx -------------------------------------------------------------

TEXT = st.text(max_size=12) | st.sampled_from(["\x00", "\ud800", "iris", "ds_0000000000000000"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
)
SUBMISSIONS = st.fixed_dictionaries(
    {},
    optional={
        "dataset": st.sampled_from(["iris", "wine", "diabetes"]) | TEXT,
        "model": st.sampled_from(["logistic_regression", "random_forest", "ridge"]) | TEXT,
        "params": st.dictionaries(st.sampled_from(["C", "max_depth", "alpha"]) | TEXT, JSON_VALUES),
        "tags": st.dictionaries(TEXT, TEXT, max_size=3) | JSON_VALUES,
        "experiment": TEXT | JSON_VALUES,
        "target": TEXT,
        "task": st.sampled_from(["classification", "regression"]) | TEXT,
        "cv": st.integers(-3, 25) | JSON_VALUES,
        "test_size": st.floats() | JSON_VALUES,
        "seed": st.integers(-5, 2**40),
        "extra": JSON_VALUES,
    },
)
QUERY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["metrics.accuracy > 0.9", "params.C = '1' and status = FINISHED", "metrics.a > 1e400"]
)
QUERIES = st.fixed_dictionaries(
    {},
    optional={
        "filter": QUERY_TEXT,
        "order_by": QUERY_TEXT | st.sampled_from(["metrics.accuracy desc", "end_time asc"]),
        "experiment": QUERY_TEXT,
        "status": QUERY_TEXT,
        "limit": st.integers(-5, 2000).map(str) | QUERY_TEXT,
        "page_token": QUERY_TEXT,
    },
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fuzzed(request: pytest.FixtureRequest, env: Path) -> Iterator[Api]:
    url = (
        {}
        if request.param == "sqlite"
        else {"database_url": request.getfixturevalue("postgres_url")}
    )
    with open_api(env, training_max_queued=10_000, **url) as api:
        yield api


def test_fuzz_submissions_never_a_server_error(fuzzed: Api) -> None:
    @FUZZ
    @given(body=SUBMISSIONS)
    def submit(body: dict[str, Any]) -> None:
        response = send(fuzzed, "POST", "/runs", body)
        assert response.status_code < 500, (body, response.text)
        assert set(response.json()) >= (
            {"run_id", "status"}
            if response.status_code == 202
            else {"error", "detail", "request_id"}
        )

    submit()


def test_fuzz_searches_never_a_server_error(fuzzed: Api) -> None:
    fuzzed.finished_run("iris-m")

    @FUZZ
    @given(query=QUERIES)
    def search(query: dict[str, str]) -> None:
        response = fuzzed.client.get("/runs", params=query)
        assert response.status_code < 500, (query, response.text)

    search()

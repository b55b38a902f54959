"""The prediction service's HTTP layer in process: every rule it adds around the app (limits,
keys, request ids, the error shape, metrics and the access log) over a tiny stand-in app;
``tests/test_service.py`` runs it inside the real `bentoml serve`."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.to_thread import run_sync
from fastapi.testclient import TestClient

from training.ops.keys import KeyRing
from training.serving.http import ServiceHTTP
from training.serving.keys import KeyStore

LIMIT = 2048
TIMEOUT_S = 0.3
PYDANTIC_400 = {
    "error": "validation",
    "detail": [
        {"loc": ["instances", 1, "petal_width_cm"], "msg": "Field required", "type": "missing"},
        {"loc": ["instances"], "msg": "List should have at most 2 items", "type": "too_long"},
    ],
}


class StandIn:
    """What BentoML does behind the layer, reduced: echo the body's size; answer a body of
    ``bad`` with pydantic's 400, as BentoML does for a request that fails validation; and on
    a few paths, the answers frameworks make on their own."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path == "/crash":
            raise RuntimeError("secret internals of the crash")
        if path == "/slow":
            await run_sync(time.sleep, 1.0)  # a model call in a thread, past the timeout
        if path == "/only-get":  # Starlette's own 405
            await _answer(send, 405, b"Method Not Allowed", b"text/plain", [(b"allow", b"GET")])
            return
        if path == "/internal":  # BentoML's 500 carries the exception's text
            await _answer(send, 500, b'{"error": "KeyError: secret column"}', b"application/json")
            return
        status, payload = (400, PYDANTIC_400) if body == b"bad" else (200, {"size": len(body)})
        await _answer(send, status, json.dumps(payload).encode(), b"application/json")


async def _answer(
    send: Any,
    status: int,
    data: bytes,
    media: bytes,
    extra: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> None:
    headers = [(b"content-type", media), (b"content-length", b"%d" % len(data)), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class Layer:
    def __init__(self, keys: KeyStore | None, hold_file: Path | None = None) -> None:
        self.app = StandIn()
        self.observed: list[tuple[str, int]] = []
        self.client = TestClient(
            ServiceHTTP(
                self.app,
                max_body_bytes=LIMIT,
                model_tag="iris-logistic_regression:abc",
                access_log_enabled=True,
                observe=lambda path, status, _: self.observed.append((path, status)),
                keys=keys,
                timeout_s=TIMEOUT_S,
                hold_file=hold_file,
            ),
            raise_server_exceptions=False,
        )


@pytest.fixture
def layer() -> Layer:
    return Layer(keys=None)


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[Layer, str, str]]:
    ring = KeyRing(tmp_path / "keys.json")
    _, predict = ring.create("app", "predict")
    record, revoked = ring.create("old", "predict")
    ring.revoke(record.id)
    yield Layer(KeyStore(tmp_path / "keys.json")), predict, revoked


def test_a_declared_body_over_the_limit_is_a_json_413_before_the_app(layer: Layer) -> None:
    response = layer.client.post("/predict", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    body = response.json()
    assert body["error"] == f"request body is larger than {LIMIT} bytes" and body["detail"] == []
    assert body["request_id"] == response.headers["x-request-id"]
    assert layer.app.calls == 0 and layer.observed == [("/predict", 413)]


def test_a_chunked_body_is_counted_refused_past_the_limit_and_replayed_under_it(
    layer: Layer,
) -> None:
    def chunks(count: int) -> Iterator[bytes]:
        yield from (b"x" * 512 for _ in range(count))

    refused = layer.client.post("/predict", content=chunks(5))
    assert refused.status_code == 413 and layer.app.calls == 0
    passed = layer.client.post("/predict", content=chunks(4))
    assert passed.status_code == 200 and passed.json() == {"size": 2048}


def test_pydantic_400s_are_reshaped_to_name_row_feature_and_reason(layer: Layer) -> None:
    response = layer.client.post("/predict", content=b"bad")
    assert response.status_code == 400
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json() == {
        "request_id": response.headers["x-request-id"],
        "error": "invalid request: 2 problems",
        "detail": [
            {
                "row": 1,
                "feature": "petal_width_cm",
                "field": "instances.1.petal_width_cm",
                "reason": "Field required",
            },
            {
                "row": None,
                "feature": None,
                "field": "instances",
                "reason": "List should have at most 2 items",
            },
        ],
    }
    # Only the API's own routes are reshaped and counted.
    other = layer.client.post("/elsewhere", content=b"bad")
    assert other.json()["error"] == "validation" and ("/elsewhere", 400) not in layer.observed
    assert other.json()["detail"] == PYDANTIC_400["detail"]


def test_a_proxy_request_id_is_kept_and_a_malformed_one_replaced(layer: Layer) -> None:
    kept = layer.client.post("/predict", content=b"{}", headers={"X-Request-ID": "edge-42"})
    assert kept.headers["x-request-id"] == "edge-42"
    replaced = layer.client.post("/predict", content=b"{}", headers={"X-Request-ID": "a b\tc"})
    assert (
        replaced.headers["x-request-id"] != "a b\tc" and len(replaced.headers["x-request-id"]) == 32
    )
    fresh = layer.client.get("/livez")
    assert len(fresh.headers["x-request-id"]) == 32


def test_the_access_line_names_request_status_and_model(
    layer: Layer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bentoml.access"):
        layer.client.post("/predict", content=b"{}", headers={"X-Request-ID": "rid-7"})
        layer.client.get("/livez")  # health checks are not logged
    [line] = [r.getMessage() for r in caplog.records if r.name == "bentoml.access"]
    assert "POST /predict 200" in line and "request_id=rid-7" in line
    assert line.endswith("model=iris-logistic_regression:abc")


def test_api_routes_need_a_valid_predict_key_health_does_not(
    keyed: tuple[Layer, str, str],
) -> None:
    layer, key, revoked = keyed
    missing = layer.client.post("/predict", content=b"{}")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"].startswith("missing API key")
    for wrong in (revoked, key[:-1] + ("A" if key[-1] != "A" else "B"), "tk_nonsense"):
        refused = layer.client.post("/predict", content=b"{}", headers={"X-API-Key": wrong})
        assert (
            refused.status_code == 401 and refused.json()["error"] == "invalid or revoked API key"
        )
    assert layer.app.calls == 0
    allowed = layer.client.post(
        "/predict", content=b"{}", headers={"Authorization": f"Bearer {key}"}
    )
    assert allowed.status_code == 200
    assert layer.client.get("/readyz").status_code == 200  # the edge's health checks
    assert layer.observed.count(("/predict", 401)) == 4


def test_framework_answers_leave_in_the_one_shape_with_their_headers(layer: Layer) -> None:
    response = layer.client.post("/only-get", headers={"X-Request-ID": "rid-405"})
    assert response.status_code == 405 and response.headers["allow"] == "GET"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Method Not Allowed", "detail": [], "request_id": "rid-405"}


def test_a_500_names_the_request_id_never_the_internals(
    layer: Layer, caplog: pytest.LogCaptureFixture
) -> None:
    answered = layer.client.get("/internal")
    assert answered.status_code == 500 and "secret" not in answered.text
    assert answered.json()["request_id"] in answered.json()["error"]
    with caplog.at_level(logging.ERROR, logger="training.http"):
        crashed = layer.client.get("/crash", headers={"X-Request-ID": "rid-crash"})
    assert crashed.status_code == 500 and "secret" not in crashed.text
    assert crashed.json()["request_id"] == "rid-crash" and "rid-crash" in crashed.json()["error"]
    [record] = [r for r in caplog.records if r.name == "training.http"]
    assert "rid-crash" in record.getMessage() and record.exc_info is not None


def test_no_answer_in_time_is_a_json_504_counted_and_logged_as_such(
    layer: Layer, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="bentoml.access"):
        response = layer.client.post("/predict", content=b"{}", headers={"X-Request-ID": "r504"})
        slow = layer.client.post("/slow", content=b"{}")
    assert response.status_code == 200  # the stand-in answers /predict at once
    assert slow.status_code == 504 and time.monotonic() - started < 1.0  # not after the thread
    assert slow.json()["error"] == f"no answer within {TIMEOUT_S} s" and slow.json()["request_id"]


def test_head_on_health_routes_oversize_headers_and_other_media_types(layer: Layer) -> None:
    head = layer.client.head("/livez")
    assert head.status_code == 200 and head.content == b"" and layer.app.calls == 1
    oversize = layer.client.get("/model", headers={"X-Big": "a" * 20_000})
    assert oversize.status_code == 431 and oversize.json()["error"].endswith("more than 16384")
    text = layer.client.post("/predict", content=b"{}", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and "application/json" in text.json()["error"]
    packed = layer.client.post(
        "/predict", content=b"\x1f\x8b", headers={"Content-Encoding": "gzip"}
    )
    assert packed.status_code == 415 and "uncompressed" in packed.json()["error"]
    assert layer.app.calls == 1  # none reached the app
    plain = {"Content-Encoding": "identity"}
    assert layer.client.post("/predict", content=b"{}", headers=plain).status_code == 200
    json_utf8 = {"Content-Type": "application/json; charset=utf-8"}
    assert layer.client.post("/predict", content=b"{}", headers=json_utf8).status_code == 200


def test_a_held_instance_is_not_ready_but_still_answers_its_callers(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    layer = Layer(keys=None, hold_file=hold)
    assert layer.client.get("/readyz").status_code == 200
    assert layer.client.get("/readyz?pool=canary").status_code == 503  # no canary step
    hold.touch()  # what the rollout does before it stops this instance
    for method in ("GET", "HEAD"):
        for path in ("/readyz", "/readyz?pool=canary"):
            assert layer.client.request(method, path).status_code == 503
    body = layer.client.get("/readyz").json()
    assert body["error"].startswith("out of rotation") and body["request_id"]
    assert layer.client.get("/livez").status_code == 200  # alive: not to be restarted
    assert layer.client.post("/predict", content=b"{}").status_code == 200  # in flight: served
    hold.write_text("canary")  # a canary step: in the canary pool only
    assert layer.client.get("/readyz?pool=canary").status_code == 200
    refused = layer.client.get("/readyz")
    assert refused.status_code == 503 and "canary pool" in refused.json()["error"]
    hold.unlink()
    assert layer.client.get("/readyz").status_code == 200

"""The prediction service under the real `bentoml serve`: endpoints, validation, fuzz, client.

The servers (``iris``, ``mixed``, ``regression``) are the session's, shared with
tests/test_oip.py (conftest.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bentoml
import httpx
import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servers import Server, in_process, wait_until
from training.serving.features import FeatureSchema

pytestmark = pytest.mark.slow

IRIS_ROWS = [
    {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2},
    {"sepal_length_cm": 6.7, "sepal_width_cm": 3.0, "petal_length_cm": 5.2, "petal_width_cm": 2.3},
    {"sepal_length_cm": 5.9, "sepal_width_cm": 3.0, "petal_length_cm": 4.2, "petal_width_cm": None},
]


def post(server: Server, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=30, **kwargs)


def test_predict_matches_the_model_in_process_and_names_its_model(
    iris: Server, iris_model: str
) -> None:
    response = post(iris, "/predict", {"instances": IRIS_ROWS})
    assert response.status_code == 200
    body = response.json()
    assert body["predictions"] == in_process(iris_model, "predict", IRIS_ROWS)
    assert body["predictions"][:2] == ["setosa", "virginica"]  # labels as trained, strings
    run_id = bentoml.models.get(iris_model).info.labels["run_id"]
    assert (body["model_tag"], body["run_id"]) == (iris_model, run_id)
    assert response.headers["x-model-tag"] == iris_model and response.headers["x-run-id"] == run_id
    assert response.headers["x-request-id"]


def test_predict_proba_is_keyed_by_class(iris: Server, iris_model: str) -> None:
    response = post(iris, "/predict_proba", {"instances": IRIS_ROWS})
    assert response.status_code == 200
    body = response.json()
    assert body["classes"] == ["setosa", "versicolor", "virginica"]
    expected = in_process(iris_model, "predict_proba", IRIS_ROWS)
    for got, want in zip(body["probabilities"], expected, strict=True):
        assert list(got) == body["classes"]
        assert np.allclose(list(got.values()), want)
    assert response.headers["x-model-tag"] == iris_model


def test_model_card(iris: Server, iris_model: str) -> None:
    response = httpx.get(f"{iris.url}/model", timeout=10)
    assert response.status_code == 200
    card = response.json()
    assert card["model_tag"] == iris_model and card["task"] == "classification"
    assert [f["name"] for f in card["features"]] == list(IRIS_ROWS[0])
    assert card["classes"] == ["setosa", "versicolor", "virginica"]
    assert 0 < card["metrics"]["accuracy"] <= 1 and card["created_at"] and len(card["run_id"]) == 32
    assert response.headers["x-run-id"] == card["run_id"]


def test_health_and_metrics_by_model_tag(iris: Server, iris_model: str) -> None:
    assert httpx.get(f"{iris.url}/livez").status_code == 200
    assert httpx.get(f"{iris.url}/readyz").status_code == 200
    post(iris, "/predict", {"instances": IRIS_ROWS})
    post(iris, "/predict", {"instances": []})
    text = httpx.get(f"{iris.url}/metrics").text
    label = f'model_tag="{iris_model}"'
    assert any(
        line.startswith("prediction_rows_total{") and label in line for line in text.splitlines()
    )
    assert any(
        line.startswith("prediction_requests_total{") and label in line and 'status="200"' in line
        for line in text.splitlines()
    )
    assert any(
        line.startswith("prediction_errors_total{") and 'status="400"' in line
        for line in text.splitlines()
    )
    assert "prediction_request_duration_seconds_bucket{" in text


def _mapped_files(server: Server) -> str:
    """What the server's processes have mapped: every shared library they imported."""
    family = [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(True)]
    return "".join(Path(f"/proc/{p.pid}/maps").read_text() for p in family)


def test_a_linear_models_worker_never_loads_scikit_learn(
    iris: Server, regression: Server, mixed: Server
) -> None:
    """Its serving form answers alone: no scikit-learn, SciPy or pandas in any process (the
    forest needs scikit-learn, and the check sees it there)."""
    for server in (iris, regression):
        features = httpx.get(f"{server.url}/model", timeout=10).json()["features"]
        rows = FeatureSchema.model_validate(features).sample_rows(3)
        assert post(server, "/predict", {"instances": rows}).status_code == 200
        mapped = _mapped_files(server)
        assert "/sklearn/" not in mapped and "/scipy" not in mapped and "/pandas/" not in mapped
    assert "/sklearn/" in _mapped_files(mixed)


def test_the_access_log_line_carries_the_request_id(iris: Server) -> None:
    response = post(
        iris, "/predict", {"instances": IRIS_ROWS[:1]}, headers={"X-Request-ID": "test-rid-42"}
    )
    assert response.headers["x-request-id"] == "test-rid-42"
    line = next(line for line in iris.log_text().splitlines() if "request_id=test-rid-42" in line)
    assert "POST /predict 200" in line


def problems(response: httpx.Response) -> list[tuple[Any, Any, str]]:
    body = response.json()
    assert body["error"] and isinstance(body["detail"], list)
    return [(p["row"], p["feature"], p["reason"]) for p in body["detail"]]


@pytest.mark.parametrize(
    ("instances", "expected"),
    [
        (
            [{k: v for k, v in IRIS_ROWS[0].items() if k != "petal_width_cm"}],
            (0, "petal_width_cm", "Field required"),
        ),
        (
            [IRIS_ROWS[0], {**IRIS_ROWS[0], "colour": "red"}],
            (1, "colour", "Extra inputs are not permitted"),
        ),
        (
            [{**IRIS_ROWS[0], "sepal_width_cm": "3.5"}],
            (0, "sepal_width_cm", "Input should be a valid number"),
        ),
        (
            [{**IRIS_ROWS[0], "sepal_width_cm": True}],
            (0, "sepal_width_cm", "Input should be a valid number"),
        ),
        ([], (None, None, "List should have at least 1 item after validation, not 0")),
        (
            [IRIS_ROWS[0]] * 51,
            (None, None, "List should have at most 50 items after validation, not 51"),
        ),
        ([IRIS_ROWS[0], "row"], (1, None, "Input should be an object")),
    ],
)
def test_each_bad_request_is_a_400_naming_row_feature_and_reason(
    iris: Server, instances: list[Any], expected: tuple[Any, Any, str]
) -> None:
    response = post(iris, "/predict", {"instances": instances})
    assert response.status_code == 400
    assert problems(response) == [expected]


def test_non_finite_numbers_and_malformed_json(iris: Server) -> None:
    body = json.dumps({"instances": [IRIS_ROWS[0]]}).replace("5.1", "NaN")
    response = httpx.post(
        f"{iris.url}/predict", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert problems(response) == [(0, "sepal_length_cm", "Input should be a finite number")]
    response = httpx.post(
        f"{iris.url}/predict",
        content=b'{"instances": [',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400 and problems(response)[0][2].startswith("Invalid JSON")
    response = post(iris, "/predict", {"rows": IRIS_ROWS})
    assert response.status_code == 400 and ("instances" in response.json()["detail"][0]["field"])


def test_bodies_over_the_limit_are_a_json_413_with_or_without_length(iris: Server) -> None:
    big = b'{"instances": [' + b" " * 1_100_000 + b"]}"
    declared = httpx.post(
        f"{iris.url}/predict", content=big, headers={"content-type": "application/json"}
    )
    assert declared.status_code == 413 and "larger than 1048576 bytes" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    chunked = httpx.post(
        f"{iris.url}/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413 and chunked.json()["detail"] == []


def test_unknown_category_booleans_and_missing_values(mixed: Server, mixed_model: str) -> None:
    rows = [
        {"size": None, "colour": "red", "indoor": True},
        {"size": 3.5, "colour": None, "indoor": None},
    ]
    response = post(mixed, "/predict", {"instances": rows})
    assert response.status_code == 200
    assert response.json()["predictions"] == in_process(mixed_model, "predict", rows)
    response = post(
        mixed,
        "/predict",
        {"instances": [{**rows[0], "colour": "purple"}, {**rows[0], "indoor": "yes"}]},
    )
    assert response.status_code == 400
    assert problems(response) == [
        (0, "colour", "Input should be 'blue', 'green' or 'red'"),
        (1, "indoor", "Input should be a valid boolean"),
    ]


def test_a_regressor_predicts_values_and_has_no_probabilities(
    regression: Server, regression_model: str
) -> None:
    row = {name: 0.01 for name in ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")}
    response = post(regression, "/predict", {"instances": [row]})
    assert response.status_code == 200
    assert response.json()["predictions"] == pytest.approx(
        in_process(regression_model, "predict", [row])
    )
    refused = post(regression, "/predict_proba", {"instances": [row]})
    assert refused.status_code == 400 and "regression model" in refused.json()["error"]


def test_openapi_documents_every_endpoint_and_feature(iris: Server) -> None:
    spec = httpx.get(f"{iris.url}/docs.json").json()
    assert {"/predict", "/predict_proba", "/model", "/livez", "/readyz", "/metrics"} <= set(
        spec["paths"]
    )
    assert "get" in spec["paths"]["/model"]
    row = spec["components"]["schemas"]["Row"]
    assert list(row["properties"]) == list(IRIS_ROWS[0]) and row["additionalProperties"] is False


def test_the_bentoml_sync_client_drives_the_service(iris: Server, iris_model: str) -> None:
    with bentoml.SyncHTTPClient(iris.url) as client:
        result = client.predict(instances=IRIS_ROWS[:2])
    assert result["predictions"] == ["setosa", "virginica"] and result["model_tag"] == iris_model


# -- fuzz: nothing a caller sends may yield a 5xx -------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
FEATURE_VALUES = (
    st.none()
    | st.booleans()
    | st.floats()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=8)
    | JSON_VALUES
)
ROWS = st.dictionaries(
    st.sampled_from([*IRIS_ROWS[0], "size", "colour", "indoor", "extra"]),
    FEATURE_VALUES,
    max_size=6,
)
BODIES = (
    JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | st.lists(ROWS | JSON_VALUES, max_size=5).map(
        lambda rows: json.dumps({"instances": rows}).encode()
    )
    | st.binary(max_size=200)
)


def ok(response: httpx.Response) -> bool:
    return response.status_code == 200


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(["/predict", "/predict_proba"]), body=BODIES)
def test_fuzz_never_a_server_error(iris: Server, mixed: Server, path: str, body: bytes) -> None:
    for server in (iris, mixed):
        response = httpx.post(
            f"{server.url}{path}",
            content=body,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert response.status_code in (200, 400, 413, 422), (response.status_code, response.text)
        assert ok(response) or response.json()["request_id"] == response.headers["x-request-id"]
        payload = response.json()
        if response.status_code != 200:
            assert payload["error"] and isinstance(payload["detail"], list)


# -- every answer in one shape, the timeout included ---------------------------------------------


def test_framework_answers_come_in_the_service_shape(iris: Server) -> None:
    for response, status in (
        (httpx.delete(f"{iris.url}/predict"), 405),
        (httpx.put(f"{iris.url}/model"), 405),
        (httpx.get(f"{iris.url}/nowhere"), 404),
        (post(iris, "/predict", None, content=b"{}", headers={"Content-Type": "text/plain"}), 415),
    ):
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error", "detail", "request_id"}
        assert body["request_id"] == response.headers["x-request-id"]
    assert httpx.delete(f"{iris.url}/predict").headers["allow"] == "POST"
    assert httpx.head(f"{iris.url}/readyz").status_code == 200


def test_a_request_past_the_timeout_is_a_json_504_counted_and_logged_as_one(iris: Server) -> None:
    def trickle() -> Iterator[bytes]:
        yield b'{"instances": '
        time.sleep(3)  # REQUEST_TIMEOUT_S is 2 here
        yield json.dumps(IRIS_ROWS).encode() + b"}"

    response = httpx.post(
        f"{iris.url}/predict",
        content=trickle(),
        headers={"Content-Type": "application/json", "X-Request-ID": "slow-one"},
        timeout=30,
    )
    assert response.status_code == 504 and response.json()["request_id"] == "slow-one"
    assert response.json()["error"] == "no answer within 2.0 s"

    # Counted and logged once the request is over, a moment after its answer went out.
    def counted() -> bool:
        lines = httpx.get(f"{iris.url}/metrics").text.splitlines()
        return any(
            x.startswith("prediction_requests_total{") and 'status="504"' in x for x in lines
        )

    wait_until(counted, 10, "the 504 in the metrics")
    wait_until(lambda: "request_id=slow-one" in iris.log_text(), 10, "the 504's access line")
    line = next(x for x in iris.log_text().splitlines() if "request_id=slow-one" in x)
    assert "POST /predict 504" in line
    metrics = httpx.get(f"{iris.url}/metrics").text.splitlines()
    assert not any(
        x.startswith("prediction_requests_total{") and 'status="500"' in x for x in metrics
    )


# -- batching: a model dear enough to batch (a forest) under concurrent requests ---------------


def distinct_rows(i: int) -> list[dict[str, Any]]:
    return [
        {
            "size": round(0.37 * i + j, 2),
            "colour": ("red", "blue", "green")[(i + j) % 3],
            "indoor": bool((i + j) % 2),
        }
        for j in range(1 + i % 5)
    ]


def concurrently(server: Server, bodies: list[tuple[str, Any]]) -> list[httpx.Response]:
    def send(item: tuple[str, Any]) -> httpx.Response:
        path, body = item
        return httpx.post(f"{server.url}{path}", json=body, timeout=60)

    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(send, bodies))


def batch_calls(server: Server) -> float:
    lines = httpx.get(f"{server.url}/metrics").text.splitlines()
    return sum(
        float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith("prediction_batch_rows_count{")
    )


def test_concurrent_requests_share_model_calls_and_get_their_own_rows(
    mixed: Server, mixed_model: str
) -> None:
    requests = [distinct_rows(i) for i in range(96)]
    calls_before = batch_calls(mixed)
    bodies = [
        ("/predict" if i % 2 else "/predict_proba", {"instances": r})
        for i, r in enumerate(requests)
    ]
    responses = concurrently(mixed, bodies)
    for i, (rows, response) in enumerate(zip(requests, responses, strict=True)):
        assert response.status_code == 200, response.text
        if i % 2:
            assert response.json()["predictions"] == in_process(mixed_model, "predict", rows)
        else:
            got = [list(p.values()) for p in response.json()["probabilities"]]
            assert np.allclose(got, in_process(mixed_model, "predict_proba", rows))
    assert batch_calls(mixed) - calls_before < len(requests)  # fewer model calls than requests
    metrics = httpx.get(f"{mixed.url}/metrics").text
    label = f'model_tag="{mixed_model}"'
    for name in ("prediction_batch_rows_bucket{", "prediction_queue_wait_seconds_bucket{"):
        assert any(x.startswith(name) and label in x for x in metrics.splitlines()), name


def test_a_bad_request_in_a_busy_batch_fails_alone(mixed: Server, mixed_model: str) -> None:
    good = [distinct_rows(i) for i in range(40)]
    bad = {"instances": [{"size": 1.0, "colour": "purple", "indoor": True}]}
    bodies: list[tuple[str, Any]] = [("/predict", {"instances": r}) for r in good]
    bodies[20:20] = [("/predict", bad)] * 4
    responses = concurrently(mixed, bodies)
    refused = [r for r in responses if r.status_code == 400]
    assert len(refused) == 4 and all(r.json()["detail"][0]["feature"] == "colour" for r in refused)
    answered = [r.json()["predictions"] for r in responses if r.status_code == 200]
    assert answered == [in_process(mixed_model, "predict", r) for r in good]

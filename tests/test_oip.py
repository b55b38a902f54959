"""The Open Inference Protocol (v2) under the real `bentoml serve`, driven by clients nobody here
wrote: tritonclient (JSON and its binary tensor extension) and kserve's InferenceRESTClient.
Every prediction is compared with what /predict answers for the same rows.

The servers are the session's (conftest.py), shared with tests/test_service.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from tritonclient.utils import InferenceServerException

from servers import Server, in_process

pytestmark = pytest.mark.slow

IRIS = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])
ROWS = [dict(zip(IRIS, row, strict=True)) for row in X.tolist()]
THINGS = [
    {"size": 9.5, "colour": "red", "indoor": True},
    {"size": 3.25, "colour": "green", "indoor": False},
    {"size": 4.0, "colour": "blue", "indoor": True},
]


def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def name_version(tag: str) -> tuple[str, str]:
    name, _, version = tag.partition(":")
    return name, version


def native(server: Server, path: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    answer = httpx.post(f"{server.url}{path}", json={"instances": rows}, timeout=30)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def columns(
    data: dict[str, np.ndarray], binary: bool, datatypes: dict[str, str] | None = None
) -> list[triton.InferInput]:
    inputs = []
    for name, array in data.items():
        tensor = triton.InferInput(name, list(array.shape), (datatypes or {}).get(name, "FP64"))
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def iris_columns(binary: bool) -> list[triton.InferInput]:
    return columns({n: X[:, j].copy() for j, n in enumerate(IRIS)}, binary)


def refused(call: Any, *args: Any, **kwargs: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return caught.value


# -- health and metadata ---------------------------------------------------------------------


def test_health_and_server_metadata(iris: Server, iris_model: str) -> None:
    name, version = name_version(iris_model)
    tc = client(iris)
    assert tc.is_server_live() and tc.is_server_ready()
    assert tc.is_model_ready(name) and tc.is_model_ready(name, version)
    assert not tc.is_model_ready("other") and not tc.is_model_ready(name, "0")
    assert tc.get_server_metadata()["extensions"] == ["binary_tensor_data"]

    async def kserve_says() -> tuple[bool, bool, bool, bool]:
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as kc:
            return (
                await kc.is_server_live(iris.url),
                await kc.is_server_ready(iris.url),
                await kc.is_model_ready(iris.url, name),
                await kc.is_model_ready(iris.url, "other"),
            )

    assert asyncio.run(kserve_says()) == (True, True, True, False)
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert httpx.head(f"{iris.url}{path}").status_code == 200


def test_readiness_follows_the_rollouts_hold_but_not_the_canary_pool(
    iris: Server, iris_model: str
) -> None:
    env = psutil.Process(iris.proc.pid).environ()
    hold = Path(env["SERVICE_HOLD_FILE"])
    ready = f"{iris.url}/v2/health/ready"
    try:
        hold.write_text("")  # held back (starting, draining): not ready, still answering
        answer = httpx.get(ready)
        assert answer.status_code == 503 and "out of rotation" in answer.json()["error"]
        assert httpx.get(f"{iris.url}/v2/health/live").status_code == 200
        assert (
            client(iris).infer(name_version(iris_model)[0], iris_columns(True)).as_numpy("predict")
            is not None
        )
        hold.write_text("canary")  # a pool of the edge's: the instance itself is ready
        assert (
            httpx.get(ready).status_code == 200
            and httpx.get(f"{iris.url}/readyz").status_code == 503
        )
    finally:
        hold.unlink(missing_ok=True)
    assert httpx.get(ready).status_code == 200


def test_model_metadata_lists_a_tensor_per_feature_and_the_outputs(
    iris: Server, mixed: Server, regression: Server, iris_model: str, mixed_model: str
) -> None:
    name, version = name_version(iris_model)
    meta = client(iris).get_model_metadata(name, version)
    assert (meta["name"], meta["versions"], meta["platform"]) == (name, [version], "sklearn")
    assert meta["inputs"] == [{"name": n, "datatype": "FP64", "shape": [-1]} for n in IRIS]
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
    ]
    assert json.loads(meta["parameters"]["classes"]) == ["setosa", "versicolor", "virginica"]
    assert meta["parameters"]["model_tag"] == iris_model
    things = client(mixed).get_model_metadata(name_version(mixed_model)[0])
    assert [(i["name"], i["datatype"]) for i in things["inputs"]] == [
        ("size", "FP64"),
        ("colour", "BYTES"),
        ("indoor", "BOOL"),
    ]
    regressor = httpx.get(f"{regression.url}/v2/models/diabetes-ridge").json()
    assert regressor["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    answer = httpx.get(f"{iris.url}/v2/models/{name}")
    assert answer.headers["x-model-tag"] == iris_model and answer.headers["x-run-id"] == version


# -- inference: both input forms, each output, JSON and binary, equal to /predict ---------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_both_input_forms_answer_as_predict_does(
    iris: Server, iris_model: str, binary: bool
) -> None:
    name, version = name_version(iris_model)
    matrix = triton.InferInput("anything", [3, 4], "FP64")
    matrix.set_data_from_numpy(X, binary_data=binary)
    integers = triton.InferInput("x", [3, 4], "INT32")  # any numeric datatype will do
    integers.set_data_from_numpy(X.round().astype(np.int32), binary_data=binary)
    rounded = [dict(zip(IRIS, row, strict=True)) for row in X.round().tolist()]
    for inputs, rows in ((iris_columns(binary), ROWS), ([matrix], ROWS), ([integers], rounded)):
        result = client(iris).infer(
            name,
            inputs,
            request_id="req-7",
            outputs=[
                triton.InferRequestedOutput("predict", binary_data=binary),
                triton.InferRequestedOutput("predict_proba", binary_data=binary),
            ],
        )
        response = result.get_response()
        assert (response["model_name"], response["model_version"], response["id"]) == (
            name,
            version,
            "req-7",
        )
        got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict")]
        assert got == native(iris, "/predict", rows)["predictions"]
        native_proba = native(iris, "/predict_proba", rows)["probabilities"]
        proba = [list(p.values()) for p in native_proba]
        assert result.as_numpy("predict_proba").tolist() == proba
        classes = json.loads(result.get_output("predict_proba")["parameters"]["classes"])
        assert classes == list(native_proba[0])


def test_outputs_are_selected_and_each_may_be_binary_or_json(iris: Server, iris_model: str) -> None:
    name = name_version(iris_model)[0]
    result = client(iris).infer(
        name, iris_columns(True), outputs=[triton.InferRequestedOutput("predict_proba")]
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["predict_proba"]
    both = client(iris).infer(  # no outputs named: all, as binary data (tritonclient's default)
        name, iris_columns(False), parameters={"a_custom_parameter": 3}
    )
    sizes = {o["name"]: o["parameters"]["binary_data_size"] for o in both.get_response()["outputs"]}
    assert sizes["predict_proba"] == 3 * 3 * 8
    mixed_kinds = client(iris).infer(
        name,
        iris_columns(True),
        outputs=[
            triton.InferRequestedOutput("predict", binary_data=False),
            triton.InferRequestedOutput("predict_proba", binary_data=True),
        ],
    )
    [labels, proba] = mixed_kinds.get_response()["outputs"]
    assert labels["data"] == native(iris, "/predict", ROWS)["predictions"]
    assert proba["parameters"]["binary_data_size"] == 72 and "data" not in proba
    wrong = refused(
        client(iris).infer, name, iris_columns(True), outputs=[triton.InferRequestedOutput("x")]
    )
    assert wrong.status() == "400" and "unknown output 'x'" in wrong.message()


def test_a_text_feature_model_through_bytes(mixed: Server, mixed_model: str) -> None:
    name = name_version(mixed_model)[0]
    data = {
        "size": np.array([r["size"] for r in THINGS]),
        "colour": np.array([r["colour"].encode() for r in THINGS], dtype=object),
        "indoor": np.array([r["indoor"] for r in THINGS]),
    }
    kinds = {"colour": "BYTES", "indoor": "BOOL"}
    expected = native(mixed, "/predict", THINGS)["predictions"]
    assert expected == in_process(mixed_model, "predict", THINGS)
    for binary in (True, False):
        result = client(mixed).infer(name, columns(data, binary, kinds))
        assert [v.decode() for v in result.as_numpy("predict")] == expected
    # JSON's null is a missing value, as on /predict; an unknown category is refused alike.
    body = {
        "inputs": [
            {"name": "size", "shape": [2], "datatype": "FP64", "data": [None, 3.5]},
            {"name": "colour", "shape": [2], "datatype": "BYTES", "data": ["red", "purple"]},
            {"name": "indoor", "shape": [2, 1], "datatype": "BOOL", "data": [[True], [None]]},
        ]
    }
    answer = httpx.post(f"{mixed.url}/v2/models/{name}/infer", json=body)
    assert answer.status_code == 400
    native_refusal = httpx.post(
        f"{mixed.url}/predict",
        json={
            "instances": [
                {"size": None, "colour": "red", "indoor": True},
                THINGS[1] | {"colour": "purple"},
            ]
        },
    ).json()["detail"]
    [problem] = answer.json()["detail"]
    assert (problem["row"], problem["feature"], problem["reason"]) == (
        1,
        "colour",
        native_refusal[0]["reason"],
    )
    assert problem["field"] == "inputs.1.data.1"
    assert "row 1, feature 'colour' (inputs.1.data.1): Input should be" in answer.json()["error"]
    body["inputs"][1]["data"] = ["red", "blue"]
    answer = httpx.post(f"{mixed.url}/v2/models/{name}/infer", json=body)
    assert answer.status_code == 200
    rows = [
        {"size": None, "colour": "red", "indoor": True},
        {"size": 3.5, "colour": "blue", "indoor": None},
    ]
    assert answer.json()["outputs"][0]["data"] == in_process(mixed_model, "predict", rows)


def test_a_regressor_answers_values(regression: Server, regression_model: str) -> None:
    features = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
    rows = [dict.fromkeys(features, 0.01), dict.fromkeys(features, -0.02)]
    matrix = triton.InferInput("x", [2, 10], "FP64")
    matrix.set_data_from_numpy(np.array([list(r.values()) for r in rows]))
    result = client(regression).infer(name_version(regression_model)[0], [matrix])
    assert (
        result.as_numpy("predict").tolist() == native(regression, "/predict", rows)["predictions"]
    )
    wrong = refused(
        client(regression).infer,
        name_version(regression_model)[0],
        [matrix],
        outputs=[triton.InferRequestedOutput("predict_proba")],
    )
    assert "the model's outputs are predict" in wrong.message()


def test_kserve_client_json_and_binary(iris: Server, iris_model: str) -> None:
    name = name_version(iris_model)[0]

    async def infer(binary: bool) -> Any:
        tensor = InferInput("x", [3, 4], "FP64")
        tensor.set_data_from_numpy(X, binary_data=binary)
        wanted = [
            RequestedOutput(n, parameters={"binary_data": binary})
            for n in ("predict", "predict_proba")
        ]
        request = InferRequest(
            model_name=name, infer_inputs=[tensor], request_id="k-1", request_outputs=wanted
        )
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as kc:
            answer = await kc.infer(iris.url, request, model_name=name)
            with pytest.raises(httpx.HTTPStatusError) as unknown:
                await kc.infer(iris.url, request, model_name="nope")
        return answer, str(unknown.value)

    labels = native(iris, "/predict", ROWS)["predictions"]
    proba = [list(p.values()) for p in native(iris, "/predict_proba", ROWS)["probabilities"]]
    for binary in (True, False):
        answer, unknown = asyncio.run(infer(binary))
        assert answer.id == "k-1"
        outputs = {o.name: o.as_numpy().tolist() for o in answer.outputs}
        assert outputs["predict"] == labels
        assert outputs["predict_proba"] == proba
        assert "unknown model 'nope'" in unknown and "404" in unknown


# -- refusals the clients show ------------------------------------------------------------------


def one(name: str, shape: list[int], datatype: str, data: list[Any]) -> triton.InferInput:
    tensor = triton.InferInput(name, shape, datatype)
    dtype = object if datatype == "BYTES" else None
    tensor.set_data_from_numpy(np.array(data, dtype=dtype).reshape(shape))
    return tensor


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            [one("petals", [1], "FP64", [1.0])],
            "unknown input 'petals'; the model takes one tensor per feature",
        ),
        (
            [*iris_columns(True)[:3], one("petal_width_cm", [3], "BYTES", [b"a", b"b", b"c"])],
            "input 'petal_width_cm' is BYTES, but the feature is a number",
        ),
        ([*iris_columns(True)[:3]], "missing input petal_width_cm"),
        (
            [*iris_columns(True)[:3], one("petal_width_cm", [3, 2], "FP64", [0.0] * 6)],
            "input 'petal_width_cm' has shape [3, 2]; a feature's tensor is [N] (or [N, 1])",
        ),
        (
            [*iris_columns(True)[:3], one("petal_width_cm", [2], "FP64", [0.0] * 2)],
            "the inputs have different numbers of rows",
        ),
        ([one("x", [1, 3], "FP64", [1.0] * 3)], "the model has 4 features"),
        ([one("x", [1, 4], "BOOL", [True] * 4)], "input 'x' is BOOL; send the features as FP64"),
        (
            [one("x", [2, 4], "FP64", [1.0, 2.0, np.inf, 4.0, 1.0, 2.0, 3.0, np.nan])],
            "2 problems: row 0, feature 'petal_length_cm' (inputs.0.data.2): Input should be a "
            "finite number; row 1, feature 'petal_width_cm' (inputs.0.data.7)",
        ),
        (
            [one("x", [51, 4], "FP64", [1.0] * 204)],
            "List should have at most 50 items after validation, not 51",
        ),
        (
            [one("x", [0, 4], "FP64", [])],
            "List should have at least 1 item after validation, not 0",
        ),
    ],
)
def test_wrong_name_shape_or_datatype_is_a_400_the_client_shows(
    iris: Server, iris_model: str, inputs: list[triton.InferInput], message: str
) -> None:
    error = refused(client(iris).infer, name_version(iris_model)[0], inputs)
    assert error.status() == "400" and message in error.message(), error.message()


def test_unknown_model_and_version_are_404s_in_the_services_shape(
    iris: Server, iris_model: str
) -> None:
    name, version = name_version(iris_model)
    tc = client(iris)
    for error in (
        refused(tc.infer, "other", iris_columns(True)),
        refused(tc.infer, name, iris_columns(True), model_version="1"),
        refused(tc.get_model_metadata, "other"),
        refused(tc.get_model_config, name),  # Triton's own route: not ours
    ):
        assert error.status() == "404", error.message()
    assert f"has no version '1': this service serves model '{name}', version '{version}'" in (
        refused(tc.infer, name, iris_columns(True), model_version="1").message()
    )
    answer = httpx.get(f"{iris.url}/v2/models/other/ready", headers={"X-Request-ID": "r-404"})
    assert answer.status_code == 404 and answer.headers["x-model-tag"] == iris_model
    assert answer.json() == {
        "error": f"unknown model 'other': this service serves model '{name}', version '{version}'",
        "detail": [],
        "request_id": "r-404",
    }
    wrong_method = httpx.get(f"{iris.url}/v2/models/{name}/infer")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"


# -- the service's rules hold on /v2 too: limits, media types, timeout, metrics by route ----------


def test_limits_media_types_and_metrics_by_route(iris: Server, iris_model: str) -> None:
    url = f"{iris.url}/v2/models/{name_version(iris_model)[0]}/infer"
    big = httpx.post(url, content=b" " * 1_100_000, headers={"content-type": "application/json"})
    assert big.status_code == 413 and "larger than 1048576 bytes" in big.json()["error"]
    text = httpx.post(url, content=b"{}", headers={"content-type": "text/plain"})
    assert text.status_code == 415 and "application/octet-stream" in text.json()["error"]
    packed = httpx.post(url, content=b"\x1f\x8b", headers={"content-encoding": "gzip"})
    assert packed.status_code == 415 and "uncompressed" in packed.json()["error"]
    client(iris).infer(name_version(iris_model)[0], iris_columns(True))
    lines = httpx.get(f"{iris.url}/metrics").text.splitlines()
    route = 'endpoint="/v2/models/{name}/infer"'
    for metric, status in (
        ("prediction_requests_total{", "200"),
        ("prediction_errors_total{", "413"),
    ):
        assert any(x.startswith(metric) and route in x and f'status="{status}"' in x for x in lines)
    assert any(x.startswith("prediction_rows_total{") and route in x for x in lines)
    assert not [x for x in lines if "/v2/models/other" in x]  # never a path a client wrote


def test_a_slow_body_is_a_504(iris: Server, iris_model: str) -> None:
    def trickle() -> Iterator[bytes]:
        yield b'{"inputs": '
        time.sleep(2.5)  # REQUEST_TIMEOUT_S is 2 on this server
        yield b"[]}"

    answer = httpx.post(
        f"{iris.url}/v2/models/{name_version(iris_model)[0]}/infer",
        content=trickle(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 504 and answer.json()["error"] == "no answer within 2.0 s"


def test_concurrent_inferences_share_the_batchers_and_get_their_own_rows(
    mixed: Server, mixed_model: str
) -> None:
    name = name_version(mixed_model)[0]
    requests = [
        [dict(THINGS[(i + j) % 3], size=0.5 * i + j) for j in range(1 + i % 3)] for i in range(48)
    ]

    def calls() -> float:
        lines = httpx.get(f"{mixed.url}/metrics").text.splitlines()
        return sum(
            float(x.rsplit(" ", 1)[1])
            for x in lines
            if x.startswith("prediction_batch_rows_count{")
        )

    def send(rows: list[dict[str, Any]]) -> list[Any]:
        data = {
            "size": np.array([r["size"] for r in rows]),
            "colour": np.array([r["colour"].encode() for r in rows], dtype=object),
            "indoor": np.array([r["indoor"] for r in rows]),
        }
        inputs = columns(data, True, {"colour": "BYTES", "indoor": "BOOL"})
        result = client(mixed).infer(name, inputs, outputs=[triton.InferRequestedOutput("predict")])
        return [v.decode() for v in result.as_numpy("predict")]

    before = calls()
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(send, requests))
    assert answers == [in_process(mixed_model, "predict", rows) for rows in requests]
    assert calls() - before < len(requests)  # fewer model calls than requests


# -- fuzz: no body, JSON or binary, yields a server error ---------------------------------------

TENSOR = st.fixed_dictionaries(
    {
        "name": st.sampled_from([*IRIS, "x", ""]),
        "shape": st.lists(st.integers(-1, 5), max_size=3),
        "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BOOL", "BYTES", "FP16", "nope"]),
    },
    optional={
        "data": st.lists(st.none() | st.floats() | st.booleans() | st.text(max_size=3), max_size=8),
        "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-2, 40)}),
    },
)
BODIES = st.tuples(
    st.fixed_dictionaries(
        {"inputs": st.lists(TENSOR, max_size=5)},
        optional={
            "outputs": st.lists(
                st.fixed_dictionaries({"name": st.sampled_from(["predict", "predict_proba", "x"])}),
                max_size=2,
            )
        },
    ).map(lambda head: json.dumps(head).encode()),
    st.binary(max_size=40),
    st.booleans(),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES)
def test_fuzz_never_a_server_error(
    iris: Server, iris_model: str, body: tuple[bytes, bytes, bool]
) -> None:
    head, tail, declared = body
    headers = {"inference-header-content-length": str(len(head))} if declared else {}
    answer = httpx.post(
        f"{iris.url}/v2/models/{name_version(iris_model)[0]}/infer",
        content=head + tail if declared else head,
        headers={"content-type": "application/octet-stream", **headers},
        timeout=30,
    )
    assert answer.status_code in (200, 400), (answer.status_code, answer.text)
    if answer.status_code == 400:
        assert set(answer.json()) == {"error", "detail", "request_id"} and answer.json()["error"]

"""The real Caddy in front of the real service: TLS, redirect, headers, limits, keys, ids."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from tritonclient.utils import InferenceServerException

from servers import Server, caddy, free_port, serve_model, wait_until
from training.ops.edge import ca_certificate, caddy_env
from training.ops.keys import KeyRing
from training.settings import EdgeSettings

pytestmark = pytest.mark.slow

ROW = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}
ORIGIN = "https://app.example.org"


@dataclass
class Edge:
    https: str
    http: str
    tls: ssl.SSLContext
    key: str
    keys: KeyRing
    service: Server
    service_port: int
    ca: str


def edge_env(tmp: Path, service_port: int, **overrides: str) -> dict[str, str]:
    settings = EdgeSettings(
        https_port=free_port(),
        http_port=free_port(),
        cors_origins=ORIGIN,
        hsts_max_age=600,
        caddy_data_dir=tmp / "caddy",
    )
    env = caddy_env(
        settings,
        service_ports=[service_port],
        max_body_bytes=1_048_576,
        service_workers=1,
        training_port=free_port(),  # nothing listens there: these tests cover the service
        max_upload_mb=50,
    )
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def edge(
    iris_model: str, session_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge")
    keys = KeyRing(tmp / "api_keys.json")
    _, key = keys.create("edge-tests", "predict")
    port = free_port()
    with serve_model(
        iris_model,
        bentoml_home=session_home / "bentoml",
        log=tmp / "service.log",
        port=port,
        REQUIRE_API_KEY="true",
        API_KEYS_FILE=str(keys.path),
    ) as service:
        env = edge_env(tmp, port)
        with caddy(env, tmp / "caddy.log"):
            yield Edge(
                https=f"https://127.0.0.1:{env['HTTPS_PORT']}",
                http=f"http://127.0.0.1:{env['HTTP_PORT']}",
                tls=ssl.create_default_context(cafile=ca_certificate(tmp / "caddy")),
                key=key,
                keys=keys,
                service=service,
                service_port=port,
                ca=str(ca_certificate(tmp / "caddy")),
            )


def predict(edge: Edge, key: str | None = None, **headers: str) -> httpx.Response:
    headers["Authorization"] = f"Bearer {key or edge.key}"
    return httpx.post(
        f"{edge.https}/predict",
        json={"instances": [ROW]},
        headers=headers,
        verify=edge.tls,
        timeout=30,
    )


def test_tls_verifies_with_the_local_ca_and_only_with_it(edge: Edge) -> None:
    response = predict(edge)
    assert response.status_code == 200 and response.json()["predictions"] == ["setosa"]
    assert response.http_version in ("HTTP/1.1", "HTTP/2")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{edge.https}/livez", timeout=10)  # the system trust store does not know it


def test_plain_http_only_redirects_keeping_the_https_port(edge: Edge) -> None:
    response = httpx.post(f"{edge.http}/predict?x=1", json={}, timeout=10)
    assert response.status_code == 308
    assert response.headers["location"] == f"{edge.https}/predict?x=1"
    assert "server" not in response.headers


def test_security_headers_and_no_server_header(edge: Edge) -> None:
    for response in (predict(edge), httpx.get(f"{edge.https}/nothing", verify=edge.tls)):
        headers = response.headers
        assert headers["strict-transport-security"].startswith("max-age=600")
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert "server" not in headers and "via" not in headers


def test_bodies_over_the_limit_get_a_json_413_declared_or_chunked(edge: Edge) -> None:
    big = b'{"instances": [' + b" " * 1_100_000 + b"]}"
    headers = {"Authorization": f"Bearer {edge.key}", "Content-Type": "application/json"}
    declared = httpx.post(f"{edge.https}/predict", content=big, headers=headers, verify=edge.tls)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    chunked = httpx.post(
        f"{edge.https}/predict", content=chunks(), headers=headers, verify=edge.tls
    )
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json()["error"] == "Request Entity Too Large"


def test_api_keys_401_without_200_with_and_revocation_within_seconds(edge: Edge) -> None:
    missing = httpx.post(f"{edge.https}/predict", json={"instances": [ROW]}, verify=edge.tls)
    assert missing.status_code == 401 and missing.json()["error"].startswith("missing API key")
    wrong = predict(edge, key="tk_000000000000_" + "x" * 43)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid or revoked API key"
    _, key = edge.keys.create("short-lived", "predict")  # picked up without a restart
    wait_until(lambda: predict(edge, key=key).status_code == 200, 5, "a new key")
    edge.keys.revoke("short-lived")
    revoked_at = time.monotonic()
    wait_until(lambda: predict(edge, key=key).status_code == 401, 5, "revocation")
    assert time.monotonic() - revoked_at < 5
    assert "short-lived" not in edge.service.log_text() and key not in edge.service.log_text()


def test_the_request_id_runs_end_to_end(edge: Edge) -> None:
    response = predict(edge, **{"X-Request-ID": "spoofed"})
    request_id = response.headers["x-request-id"]
    assert request_id != "spoofed" and uuid.UUID(request_id)
    wait_until(lambda: f"request_id={request_id}" in edge.service.log_text(), 5, "access line")
    line = next(x for x in edge.service.log_text().splitlines() if f"request_id={request_id}" in x)
    assert "POST /predict 200" in line
    error = httpx.get(f"{edge.https}/metrics", verify=edge.tls)
    assert error.json()["request_id"] == error.headers["x-request-id"]


def test_only_the_api_is_public(edge: Edge) -> None:
    for path in (
        "/metrics",
        "/docs.json",
        "/",
        "/schema.json",
        "/PREDICT",
        "//predict",
        "/predict/../metrics",
    ):
        response = httpx.get(f"{edge.https}{path}", verify=edge.tls)
        assert response.status_code == 404, path
        assert response.json() == {
            "error": "Not Found",
            "detail": [],
            "request_id": response.headers["x-request-id"],
        }
    assert httpx.get(f"http://127.0.0.1:{edge.service_port}/metrics").status_code == 200  # loopback
    assert httpx.get(f"{edge.https}/readyz", verify=edge.tls).status_code == 200


def test_unknown_hosts_and_cors_origins_are_refused(edge: Edge) -> None:
    refused = httpx.get(f"{edge.https}/livez", headers={"Host": "evil.example"}, verify=edge.tls)
    assert refused.status_code == 421 and refused.json()["error"] == "Misdirected Request"
    allowed = predict(edge, Origin=ORIGIN)
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = predict(edge, Origin="https://evil.example")
    assert "access-control-allow-origin" not in other.headers
    preflight = httpx.options(
        f"{edge.https}/predict",
        verify=edge.tls,
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert (
        preflight.status_code == 204
        and "Authorization" in preflight.headers["access-control-allow-headers"]
    )


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_the_backend_refuses_connections_on_a_non_loopback_address(edge: Edge) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with socket.socket() as client, pytest.raises(ConnectionRefusedError):
        client.settimeout(5)
        client.connect((address, edge.service_port))
    with socket.create_connection(("127.0.0.1", edge.service_port), timeout=5):
        pass  # while on loopback it does answer


def test_json_502_503_while_the_backend_is_down_and_recovery(
    iris_model: str, session_home: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = edge_env(tmp_path, port)
    url = f"https://127.0.0.1:{env['HTTPS_PORT']}/predict"

    def status() -> int:
        return httpx.post(url, json={"instances": [ROW]}, verify=tls, timeout=30).status_code

    with caddy(env, tmp_path / "caddy.log"):
        tls = ssl.create_default_context(cafile=ca_certificate(tmp_path / "caddy"))
        down = httpx.post(url, json={"instances": [ROW]}, verify=tls, timeout=30)
        assert down.status_code in (502, 503)
        assert down.json()["error"] in ("Bad Gateway", "Service Unavailable")
        with serve_model(
            iris_model, bentoml_home=session_home / "bentoml", log=tmp_path / "s.log", port=port
        ):
            wait_until(lambda: status() == 200, 30, "recovery once the backend is up")
        wait_until(lambda: status() in (502, 503), 30, "a JSON error once it is down again")


def raw_get(port: int, host: str, path: str = "/livez?a=1") -> bytes:
    """One request as written, Host header included (clients rewrite an IPv6 Host)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return conn.recv(65536)


def test_the_redirect_of_an_ipv6_host_with_or_without_its_port(edge: Edge) -> None:
    http_port, https_port = edge.http.rsplit(":", 1)[1], edge.https.rsplit(":", 1)[1]
    for host in ("[::1]", f"[::1]:{http_port}"):
        answer = raw_get(int(http_port), host).decode()
        assert answer.startswith("HTTP/1.1 308"), answer
        assert f"\r\nLocation: https://[::1]:{https_port}/livez?a=1\r\n" in answer, answer


def test_hosts_match_without_case_and_with_a_trailing_dot(edge: Edge) -> None:
    for host in ("LOCALHOST", "localhost.", "LocalHost", "127.0.0.1"):
        response = httpx.get(f"{edge.https}/livez", headers={"Host": host}, verify=edge.tls)
        assert response.status_code == 200, host
    refused = httpx.get(f"{edge.https}/livez", headers={"Host": "localhost.evil"}, verify=edge.tls)
    assert refused.status_code == 421


def test_oversize_headers_are_a_json_431_over_http1_and_http2(edge: Edge) -> None:
    big = {"Authorization": f"Bearer {edge.key}", "X-Big": "a" * 20_000}
    for http2 in (False, True):
        with httpx.Client(http2=http2, verify=edge.tls, timeout=30) as client:
            response = client.get(f"{edge.https}/model", headers=big)
        assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert response.status_code == 431 and "more than 16384" in response.json()["error"]
        assert response.json()["request_id"] == response.headers["x-request-id"]


def test_the_edge_and_the_service_name_allowed_methods(edge: Edge) -> None:
    headers = {"Authorization": f"Bearer {edge.key}"}
    at_edge = httpx.delete(f"{edge.https}/predict", headers=headers, verify=edge.tls)
    assert at_edge.status_code == 405 and at_edge.headers["allow"] == "GET, HEAD, POST"
    at_service = httpx.get(f"{edge.https}/predict", headers=headers, verify=edge.tls)
    assert at_service.status_code == 405 and at_service.headers["allow"] == "POST"
    for response in (at_edge, at_service):
        assert response.json()["request_id"] == response.headers["x-request-id"]


def test_the_canary_share_is_written_whole_as_the_edge_reads_it(tmp_path: Path) -> None:
    from training.ops.edge import canary_share_file, write_canary_share

    share = canary_share_file(tmp_path)
    for percent, text in ((20, "33"), (50, "80"), (1, "03"), (99, "fd"), (None, ""), (0, "")):
        write_canary_share(share, percent)
        assert share.read_text() == text, percent  # of 256 random ids, those below it
    assert [p.name for p in share.parent.iterdir()] == [share.name]  # no half-written file


def test_the_open_inference_protocol_through_the_edge_with_the_same_keys(
    edge: Edge, iris_model: str
) -> None:
    name = iris_model.partition(":")[0]
    tc = triton.InferenceServerClient(
        edge.https.removeprefix("https://"), ssl=True, ssl_options={"ca_certs": edge.ca}
    )
    assert tc.is_server_live() and tc.is_server_ready()  # health needs no key
    tensor = triton.InferInput("x", [1, 4], "FP64")
    tensor.set_data_from_numpy(np.array([list(ROW.values())]))
    with pytest.raises(InferenceServerException) as refused:
        tc.infer(name, [tensor])
    assert refused.value.status() == "401" and "missing API key" in refused.value.message()
    keyed = {"Authorization": f"Bearer {edge.key}"}
    # A dict of its own per call: tritonclient adds Inference-Header-Content-Length to it.
    answer = tc.infer(name, [tensor], headers=dict(keyed))
    assert answer.as_numpy("predict").tolist() == [b"setosa"]
    assert tc.get_model_metadata(name, headers=dict(keyed))["name"] == name

    async def kserve_predicts() -> list[str]:
        config = RESTConfig(protocol="v2", retries=0, verify=edge.tls)
        tensor = InferInput("x", [1, 4], "FP64")
        tensor.set_data_from_numpy(np.array([list(ROW.values())]), binary_data=True)
        async with InferenceRESTClient(config) as kc:
            answer = await kc.infer(
                edge.https, InferRequest(name, [tensor]), model_name=name, headers=dict(keyed)
            )
        return list(answer.outputs[0].as_numpy().tolist())

    assert asyncio.run(kserve_predicts()) == ["setosa"]
    body = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": list(ROW.values())}]
    }
    answer = httpx.post(
        f"{edge.https}/v2/models/{name}/infer", json=body, headers=keyed, verify=edge.tls
    )
    assert answer.headers["x-model-tag"] == iris_model and uuid.UUID(answer.headers["x-request-id"])
    big = httpx.post(
        f"{edge.https}/v2/models/{name}/infer",
        content=b" " * 1_100_000,
        headers={**keyed, "Content-Type": "application/json"},
        verify=edge.tls,
    )
    assert big.status_code == 413
    for path in (f"/v2/models/{name}/config", "/v2/models/../metrics", "/V2", "//v2", "/v2/"):
        outside = httpx.get(f"{edge.https}{path}", headers=keyed, verify=edge.tls)
        assert outside.status_code == 404 and outside.json()["error"] == "Not Found", path

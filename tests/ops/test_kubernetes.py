"""deploy/kubernetes/: valid against Kubernetes' own schemas, and played with `podman kube play`
into two prediction pods behind the edge's pod, answering an HTTPS prediction verified with
the edge's own CA.

What podman (4.3, Debian bookworm) cannot do as a cluster does is rendered for it here, and
only that: the images are the ones built here (kustomize's `images:` in a cluster); the edge
names the prediction pods (podman's DNS knows pods, not Services); the edge's HTTPS port is
published on loopback (no LoadBalancer), the prediction pods' on none (before podman 4.5 kube
play publishes every containerPort on the host, on all its addresses); and before podman 4.4 a
Secret's volume holds its `data` still base64-encoded (podman issue 16625), so the key file is
mounted from a host folder there instead (read-only, as the Secret would be).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from servers import REPO, cli_json, free_port, production_image, run_podman, wait_until

MANIFESTS = REPO / "deploy" / "kubernetes"
KUBERNETES = "1.33"  # checked against this version's schemas


def _documents() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(MANIFESTS.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
    ]


def test_the_manifests_are_valid_kubernetes_objects() -> None:
    import kubernetes_validate

    documents = _documents()
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in documents)
    assert kinds == [
        "Deployment/edge",
        "Deployment/prediction",
        "Secret/prediction-api-keys",
        "Service/edge",
        "Service/prediction",
    ]
    for doc in documents:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # raises on a stray field
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    prediction = next(d for d in documents if d["metadata"]["name"] == "prediction")
    pod = prediction["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"requests", "limits"} <= set(container["resources"])


def _podman_version() -> tuple[int, ...]:
    shown = run_podman("version", "--format", "{{.Client.Version}}").stdout.strip()
    return tuple(int(part) for part in shown.split("-")[0].split(".")[:2])


def render_forrun_podman(
    images: dict[str, str], keys_dir: Path, https_port: int, replicas: int
) -> list[dict[str, Any]]:
    """The manifests as podman can play them (module docstring)."""
    from training.ops.container import hand_over, mirror_keys

    documents = _documents()
    for doc in documents:
        if doc["kind"] == "Secret":
            doc["stringData"] = {"api_keys.json": (keys_dir / "api_keys.json").read_text()}
        if doc["kind"] != "Deployment":
            continue
        name = doc["metadata"]["name"]
        pod = doc["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        container["image"] = images[name]
        if name == "prediction":
            assert doc["spec"]["replicas"] == replicas
            container.pop("ports")
            if _podman_version() < (4, 4):
                mounted = keys_dir / "mounted"
                mirror_keys(keys_dir / "api_keys.json", mounted)
                hand_over(mounted)
                volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
                volume.pop("secret")
                volume["hostPath"] = {"path": str(mounted), "type": "Directory"}
        if name == "edge":
            upstream = " ".join(f"prediction-pod-{n}:3000" for n in range(replicas))
            for variable in container["env"]:
                if variable["name"] == "SERVICE_UPSTREAM":
                    variable["value"] = upstream
            https = next(p for p in container["ports"] if p["name"] == "https")
            https.update(hostPort=https_port, hostIP="127.0.0.1")
            container["ports"] = [https]  # the redirect port would be published on all addresses
    return documents


@pytest.fixture(scope="module")
def played(podman: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from training.ops.image import podman_env

    tmp = tmp_path_factory.mktemp("kube")
    env, prediction = production_image(tmp)
    edge = cli_json(env, "containerize", "--edge")
    key = cli_json(env, "keys", "create", "--name", "kube")["key"]
    port = free_port()
    documents = render_forrun_podman(
        {"prediction": prediction["image"], "edge": edge["image"]},
        tmp / "data",
        port,
        replicas=2,
    )
    rendered = tmp / "kube.yaml"
    rendered.write_text(yaml.safe_dump_all(documents))
    network = f"training-kube-{os.getpid()}"
    conf = podman_env(tmp / "cache")
    assert run_podman("network", "create", network).returncode == 0
    try:
        done = run_podman("kube", "play", "--network", network, str(rendered), env=conf)
        assert done.returncode == 0, done.stderr[-2000:]
        yield {
            "url": f"https://localhost:{port}",
            "key": key,
            "tag": prediction["model_tag"],
            "tmp": tmp,
        }
    finally:
        run_podman("kube", "down", str(rendered), env=conf)
        run_podman("secret", "rm", "prediction-api-keys")
        run_podman("network", "rm", "--force", network)
        run_podman("rmi", prediction["image"])
    left = run_podman("pod", "ps", "--format", "{{.Name}}").stdout.split()
    assert not [p for p in left if p.startswith(("prediction-pod-", "edge-pod-"))]


def test_the_manifests_played_with_podman_serve_an_https_prediction(
    played: dict[str, Any],
) -> None:
    pods = run_podman("pod", "ps", "--format", "{{.Name}} {{.Status}}").stdout.splitlines()
    assert sorted(p for p in pods if p.startswith(("prediction-pod-", "edge-pod-"))) == [
        "edge-pod-0 Running",
        "prediction-pod-0 Running",
        "prediction-pod-1 Running",
    ]
    ca = played["tmp"] / "root.crt"

    def edge_has_its_ca() -> bool:
        shown = run_podman(
            "exec", "edge-pod-0-caddy", "cat", "/data/caddy/pki/authorities/local/root.crt"
        )
        ca.write_text(shown.stdout)
        return shown.returncode == 0 and "BEGIN CERTIFICATE" in shown.stdout

    wait_until(edge_has_its_ca, 60, "the edge's local CA")
    tls = ssl.create_default_context(cafile=str(ca))
    headers = {"Authorization": f"Bearer {played['key']}"}
    row = {
        "sepal_length_cm": 5.1,
        "sepal_width_cm": 3.5,
        "petal_length_cm": 1.4,
        "petal_width_cm": 0.2,
    }

    def predicts() -> bool:
        try:
            sent = httpx.post(
                f"{played['url']}/predict", json={"instances": [row]}, headers=headers, verify=tls
            )
        except httpx.HTTPError:
            return False
        return sent.status_code == 200

    wait_until(predicts, 120, "an HTTPS prediction through the played edge")
    answer = httpx.post(
        f"{played['url']}/predict", json={"instances": [row]}, headers=headers, verify=tls
    )
    assert answer.json()["predictions"] == ["setosa"]
    assert answer.json()["model_tag"] == played["tag"]
    refused = httpx.post(f"{played['url']}/predict", json={"instances": [row]}, verify=tls)
    assert refused.status_code == 401  # the Secret's keys are the only ones
    for pod in ("prediction-pod-0", "prediction-pod-1", "edge-pod-0"):
        container = f"{pod}-{'caddy' if pod.startswith('edge') else 'prediction'}"
        assert run_podman("exec", container, "id", "-u").stdout.strip() == "1034"
        refused_write = run_podman("exec", container, "touch", "/x")
        assert refused_write.returncode != 0 and "Read-only" in refused_write.stderr
    for pod in ("prediction-pod-0", "prediction-pod-1"):  # reached through the edge alone
        assert run_podman("port", f"{pod}-prediction").stdout.strip() == ""

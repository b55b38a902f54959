"""`training containerize`: the bento's image built with podman from a clean store and no
registry, run as shipped (non-root, read-only root, keys mounted read-only, loopback only),
answering as the model does in process; and SERVICE_RUNTIME=container, where `training up`
serves and rolls out such containers behind the edge.

Needs podman, runc and debootstrap (Debian's packages; `make test` installs them as root);
without them these tests skip, unless REQUIRE_CONTAINERS=1 (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from servers import (
    BIN,
    Stack,
    cli_json,
    free_port,
    production_image,
    run_podman,
    up_stack,
    wait_until,
)

pytestmark = pytest.mark.slow

ROWS = [
    {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2},
    {"sepal_length_cm": 6.2, "sepal_width_cm": 2.9, "petal_length_cm": 4.3, "petal_width_cm": 1.3},
    {"sepal_length_cm": 7.7, "sepal_width_cm": 3.0, "petal_length_cm": 6.1, "petal_width_cm": 2.3},
]
IN_PROCESS = """
import json, sys, bentoml, pandas as pd
model = bentoml.sklearn.load_model(sys.argv[1])
print(json.dumps([str(p) for p in model.predict(pd.DataFrame(json.loads(sys.argv[2])))]))
"""


@pytest.fixture(scope="module")
def image(podman: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("container")
    env, built = production_image(tmp)
    yield {**built, "env": env, "data": tmp / "data"}
    run_podman("rmi", built["image"])


def test_the_image_answers_as_the_model_non_root_read_only_with_its_keys(
    image: dict[str, Any],
) -> None:
    from training.ops.container import hand_over, mirror_keys, run_args
    from training.ops.image import podman_env

    env = image["env"]
    key = cli_json(env, "keys", "create", "--name", "container-test")["key"]
    name = f"training-test-{os.getpid()}"
    port = free_port()
    keys = image["data"] / "container-keys"
    mirror_keys(image["data"] / "api_keys.json", keys)
    hand_over(keys)
    with (image["data"] / "podman.log").open("wb") as log:  # the child keeps its own
        started = subprocess.Popen(
            run_args(image["image"], name, port, keys),
            env=podman_env(image["data"] / "cache"),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if started.poll() is not None:
                log = (image["data"] / "podman.log").read_text()
                raise AssertionError(f"the container exited: {log}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/readyz").status_code == 200
            return False

        try:
            wait_until(ready, 120, "the container")
        except AssertionError as exc:
            logs = run_podman("logs", name).stderr.splitlines()
            raise AssertionError(f"{exc}\n" + "\n".join(logs[-40:])) from exc
        headers = {"Authorization": f"Bearer {key}"}
        answer = httpx.post(f"{url}/predict", json={"instances": ROWS}, headers=headers)
        assert answer.status_code == 200 and answer.headers["x-model-tag"] == image["model_tag"]
        expected = subprocess.run(
            [str(BIN / "python"), "-c", IN_PROCESS, image["model_tag"], json.dumps(ROWS)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert answer.json()["predictions"] == json.loads(expected.stdout)
        assert httpx.post(f"{url}/predict", json={"instances": ROWS}).status_code == 401
        assert run_podman("exec", name, "id", "-u").stdout.strip() == "1034"  # not root
        refused = run_podman("exec", name, "touch", "/home/bentoml/bento/x")
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr
        assert run_podman("healthcheck", "run", name).returncode == 0  # HEALTHCHECK on /readyz
        published = run_podman("port", name).stdout
        assert published.strip() == f"3000/tcp -> 127.0.0.1:{port}"  # loopback only
    finally:
        run_podman("stop", name)
        started.wait(timeout=60)
    assert run_podman("ps", "--all", "--filter", f"name={name}", "--quiet").stdout == ""
    print(
        f"\nimage {image['image']}: {image['size_bytes'] / 1e6:.0f} MB, "
        f"built in {image['seconds']} s"
    )


def test_a_second_build_reuses_the_base_image_and_the_wheels(image: dict[str, Any]) -> None:
    again = cli_json(image["env"], "containerize", "--alias", "production")
    assert again["base_image"] == image["base_image"]
    assert again["seconds"] < image["seconds"] or again["seconds"] < 30
    print(f"\nwarm build: {again['seconds']} s")
    run_podman("rmi", again["image"])


@pytest.fixture(scope="module")
def container_stack(podman: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with up_stack(tmp_path_factory.mktemp("up-container"), SERVICE_RUNTIME="container") as up:
        yield up


def _containers(prefix: str) -> list[dict[str, Any]]:
    listed = run_podman("ps", "--all", "--format", "json", "--filter", f"name={prefix}")
    return list(json.loads(listed.stdout or "[]"))


def test_up_with_the_container_runtime_serves_and_follows_the_alias_in_containers(
    container_stack: Stack,
) -> None:
    stack = container_stack
    answer = subprocess.run(shlex.split(stack.curl(0)), capture_output=True, text=True)
    served = json.loads(answer.stdout)["model_tag"]
    assert served.startswith("iris-logistic_regression:")
    assert not stack.instances()  # no `bentoml serve` on the host: it runs in its container
    port = int(stack.env["SERVICE_PORT"])
    (running,) = _containers(f"training-prediction-{port}")
    assert running["Image"].startswith("localhost/prediction:")
    assert [(p["host_ip"], p["host_port"]) for p in running["Ports"]] == [("127.0.0.1", port)]
    assert run_podman("exec", running["Id"], "id", "-u").stdout.strip() == "1034"

    # A key made after the start counts at once, as with a process.
    late = cli_json(stack.env, "keys", "create", "--name", "late")["key"]
    headers = {"Authorization": f"Bearer {late}"}

    def answers_late_key() -> bool:
        sent = httpx.post(
            f"{stack.url}/predict", json=stack.example, headers=headers, verify=stack.tls
        )
        return sent.status_code == 200

    wait_until(answers_late_key, 10, "the key made after the start")

    # A promote rolls out to a container of the new bento's image on the other slot.
    trained = cli_json(
        stack.env, "train", "--dataset", "iris", "--model", "random_forest", "--cv", "0"
    )
    tag = trained["model_tag"]
    assert stack.cli("promote", tag, "--alias", "production").returncode == 0

    def serves_new() -> bool:
        sent = httpx.post(
            f"{stack.url}/predict", json=stack.example, headers=headers, verify=stack.tls
        )
        return sent.status_code == 200 and sent.json()["model_tag"] == tag

    wait_until(serves_new, 240, "the promoted model served")
    wait_until(lambda: not _containers(f"training-prediction-{port}"), 30, "the old one gone")
    (new,) = _containers(f"training-prediction-{port + 2}")
    assert new["Image"] != running["Image"]

    # Ctrl-C stops the stack and removes its containers.
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(timeout=90) == 0
    assert _containers(f"training-prediction-{port}") == []
    assert _containers(f"training-prediction-{port + 2}") == []
    for built in (running["Image"], new["Image"]):
        run_podman("rmi", built)

"""`training containerize`: the bento's image built with podman from a clean store and no
registry, run as shipped (non-root, read-only root, keys as a secret, loopback only), answering
as the model does in process.

Needs podman, runc and debootstrap (Debian's packages; `make test` installs them as root);
without them these tests skip, unless REQUIRE_CONTAINERS=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from servers import BIN, base_env, cli_json, free_port, wait_until

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
def podman() -> None:
    from training.ops.container import missing_tools

    missing = missing_tools()
    if missing:
        reason = (
            f"{', '.join(missing)} not installed (Debian: apt-get install podman runc debootstrap)"
        )
        if os.environ.get("REQUIRE_CONTAINERS") == "1":
            pytest.fail(f"REQUIRE_CONTAINERS=1 but {reason}")
        pytest.skip(reason)


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def image(podman: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("container")
    env = base_env(DATA_DIR=str(tmp / "data"), BENTOML_HOME=str(tmp / "bentoml"))
    tag = cli_json(env, "train", "--dataset", "iris", "--model", "logistic_regression", "--cv", "0")
    cli_json(env, "promote", tag["model_tag"], "--alias", "production")
    built = cli_json(env, "containerize", "--alias", "production")
    yield {**built, "env": env, "data": tmp / "data"}
    _podman("rmi", built["image"])


def test_the_image_answers_as_the_model_non_root_read_only_with_its_keys(
    image: dict[str, Any],
) -> None:
    from training.ops.container import run_args

    env = image["env"]
    key = cli_json(env, "keys", "create", "--name", "container-test")["key"]
    name = f"training-test-{os.getpid()}"
    port = free_port()
    assert _podman("secret", "create", name, str(image["data"] / "api_keys.json")).returncode == 0
    started = subprocess.run(
        run_args(image["image"], name, port, name), capture_output=True, text=True
    )
    try:
        assert started.returncode == 0, started.stderr
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if _podman("container", "exists", name).returncode != 0:
                raise AssertionError("the container exited")
            return httpx.get(f"{url}/readyz").status_code == 200

        try:
            wait_until(ready, 120, "the container")
        except AssertionError as exc:
            logs = _podman("logs", name).stderr.splitlines()
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
        assert _podman("exec", name, "id", "-u").stdout.strip() == "1034"  # not root
        refused = _podman("exec", name, "touch", "/home/bentoml/bento/x")
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr
        assert _podman("healthcheck", "run", name).returncode == 0  # HEALTHCHECK on /readyz
        published = _podman("port", name).stdout
        assert published.strip() == f"3000/tcp -> 127.0.0.1:{port}"  # loopback only
    finally:
        _podman("rm", "--force", name)
        _podman("secret", "rm", name)
    assert _podman("ps", "--all", "--filter", f"name={name}", "--quiet").stdout == ""
    print(
        f"\nimage {image['image']}: {image['size_bytes'] / 1e6:.0f} MB, "
        f"built in {image['seconds']} s"
    )


def test_a_second_build_reuses_the_base_image_and_the_wheels(image: dict[str, Any]) -> None:
    again = cli_json(image["env"], "containerize", "--alias", "production")
    assert again["base_image"] == image["base_image"]
    assert again["seconds"] < image["seconds"] or again["seconds"] < 30
    print(f"\nwarm build: {again['seconds']} s")
    _podman("rmi", again["image"])

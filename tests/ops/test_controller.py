"""`training controller` (the systemd prediction unit): serves the alias's target from the
bento imported for it, rolls out the next target beside it, and stops cleanly on SIGTERM."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from servers import BIN, REPO, base_env, cli_json, free_slot_base, stop_process_tree, wait_until

pytestmark = pytest.mark.slow


def _train(env: dict[str, str], model: str) -> str:
    args = ("train", "--dataset", "iris", "--model", model, "--cv", "0")
    return str(cli_json(env, *args)["model_tag"])


def test_the_controller_serves_its_alias_and_follows_it(tmp_path: Path) -> None:
    base = free_slot_base(2)
    env = base_env(
        DATA_DIR=str(tmp_path / "data"),
        BENTOML_HOME=str(tmp_path / "bentoml"),
        SERVICE_PORT=str(base),
        SERVICE_WORKERS="1",
        SERVE_ALIAS="staging",
    )
    first = _train(env, "logistic_regression")
    cli_json(env, "promote", first, "--alias", "staging")
    built = cli_json(env, "build", "--alias", "staging")  # what ops import on the host
    key = cli_json(env, "keys", "create", "--name", "test")["key"]
    headers = {"Authorization": f"Bearer {key}"}
    body = {"instances": [{"sepal_length_cm": 5.0, "sepal_width_cm": 3.0,
                           "petal_length_cm": 1.5, "petal_width_cm": 0.2}]}  # fmt: skip

    def served_by(port: int) -> str | None:
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json=body, headers=headers)
        return answer.headers.get("x-model-tag") if answer.status_code == 200 else None

    log = tmp_path / "controller.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "training"), "controller"], env=env, cwd=REPO, stdout=out, stderr=out
        )
    try:
        wait_until(lambda: served_by(base) == first, 120, "the first version", proc, log)
        assert f"using the stored bento {built['bento_tag']}" in log.read_text()
        second = _train(env, "random_forest")
        cli_json(env, "promote", second, "--alias", "staging")
        wait_until(lambda: served_by(base + 2) == second, 180, "the second version", proc, log)
        wait_until(lambda: "live in" in log.read_text().split(second)[-1], 30, "live", proc, log)
        with pytest.raises(httpx.ConnectError):
            served_by(base)  # the old instance is stopped
    finally:
        stop_process_tree(proc)  # SIGTERM: it stops its instances, nothing outlives it
    assert proc.returncode == 0, log.read_text()[-2000:]
    rows = cli_json(env, "deployments", "--alias", "staging")["deployments"]
    assert [(r["to_tag"], r["result"], r["requested_by"]) for r in rows] == [
        (second, "live", rows[0]["requested_by"]),
        (first, "replaced", "training controller"),
    ]
    assert rows[0]["requested_by"].startswith("cli:")

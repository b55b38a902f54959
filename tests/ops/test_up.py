"""`training up`, what `make up` runs: trains, builds, serves over HTTPS, prints a working curl;
keeps its files private and keys out of its logs; heals a child that dies; Ctrl-C stops all.

One `training up` serves the whole module (it costs a training and a build); the tests run in
the order written, the last one stops it.
"""

from __future__ import annotations

import json
import shlex
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from servers import BIN, REPO, Stack, base_env, free_port, up_stack, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with up_stack(tmp_path_factory.mktemp("up")) as running:
        yield running


def test_up_prints_curls_that_predict_and_train(stack: Stack) -> None:
    assert stack.url in stack.printed
    ca = next(line.split()[-1] for line in stack.printed.splitlines() if "CA file" in line)
    assert ca.endswith("pki/authorities/local/root.crt") and Path(ca).is_file()
    curl = stack.curl(0)
    assert "--cacert" in curl and " -k" not in curl and "--insecure" not in curl
    answer = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=30)
    assert answer.returncode == 0, answer.stderr
    body = json.loads(answer.stdout)
    assert body["predictions"] and body["model_tag"].startswith("iris-logistic_regression:")
    training = stack.curl(1)
    assert training.endswith("/training/runs") and "--cacert" in training
    started = subprocess.run(shlex.split(training), capture_output=True, text=True, timeout=30)
    assert json.loads(started.stdout)["status"] == "QUEUED"


def test_keys_sent_anywhere_never_reach_a_log(stack: Stack) -> None:
    for key in (stack.predict_key, stack.admin_key):
        for path in ("/predict", "/model", "/training/runs", f"/training/runs/{key}"):
            url = f"{stack.url}{path}"
            httpx.get(url, params={"api_key": key, "token": key, "key": key}, verify=stack.tls)
            httpx.get(url, headers={"X-API-Key": key, "Cookie": f"key={key}"}, verify=stack.tls)
            httpx.post(url, json={"key": key}, headers={"Referer": key}, verify=stack.tls)
            httpx.get(f"http://127.0.0.1:{stack.env['HTTP_PORT']}{path}?key={key}")
    time.sleep(1)
    logs = sorted((stack.data / "logs").rglob("*.log"))
    assert {p.name for p in logs} >= {"service-0.log", "training.log", "caddy.log"}
    for log in logs:
        text = log.read_text(errors="replace")
        for key in (stack.predict_key, stack.admin_key):
            assert key.split("_", 2)[2] not in text, log  # tk_<id>_<secret>: the secret


def test_the_data_folder_is_private_to_its_user(stack: Stack) -> None:
    upload = httpx.post(
        f"{stack.url}/training/datasets",
        content="a,b\n" + "1,2\n" * 20,
        headers={"Authorization": f"Bearer {stack.admin_key}", "Content-Type": "text/csv"},
        verify=stack.tls,
    )
    assert upload.status_code in (200, 201)
    assert stat.S_IMODE(stack.data.stat().st_mode) == 0o700
    made = [p for p in stack.data.rglob("*") if p.is_file() and "caddy" not in p.parts]
    assert any(p.suffix == ".csv" for p in made) and any(p.name == "sql_app.db" for p in made)
    assert {
        p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in made if p.stat().st_mode & 0o077
    } == {}


@pytest.mark.parametrize(
    ("marker", "name"), [("training serve", "training"), ("bentoml", "service-0")]
)
def test_a_child_that_dies_is_restarted_while_the_others_serve(
    stack: Stack, marker: str, name: str
) -> None:
    victim = stack.child(marker)
    strays = victim.children(recursive=True)
    victim.send_signal(signal.SIGKILL)
    wait_until(lambda: f"{name} exited with -9; restarting it" in stack.err.read_text(), 20, name)
    if name == "training":
        assert stack.predicts()  # the prediction service keeps answering meanwhile
    else:
        assert stack.training_ready()
        wait_until(lambda: not any(p.is_running() for p in strays), 20, "its old workers gone")
    wait_until(lambda: f"{name} restarted" in stack.err.read_text(), 60, f"{name} restarted")
    wait_until(stack.predicts, 90, "predictions again")
    wait_until(stack.training_ready, 90, "the training service again")


def test_ctrl_c_stops_everything(stack: Stack) -> None:
    children = psutil.Process(stack.proc.pid).children(recursive=True)
    assert any("caddy" in " ".join(c.cmdline()) for c in children)
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(timeout=60) == 0
    time.sleep(1)
    assert not [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_up_refuses_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = base_env(
            DATA_DIR=str(tmp_path / "data"),
            BENTOML_HOME=str(tmp_path / "bentoml"),
            HTTPS_PORT=str(port),
            HTTP_PORT=str(free_port()),
            SERVICE_PORT=str(free_port()),
            TRAINING_PORT=str(free_port()),
        )
        done = subprocess.run(
            [str(BIN / "training"), "up"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    assert (
        done.stderr == f"error: port {port} (HTTPS_PORT) is in use; set HTTPS_PORT to a free port\n"
    )

"""`training up`, what `make up` runs: trains, builds, serves over HTTPS, prints a working curl."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from servers import BIN, REPO, base_env, free_port, stop_process_tree

pytestmark = pytest.mark.slow


def test_up_prints_a_curl_that_predicts_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = base_env(
        DATA_DIR=str(tmp_path / "data"),
        BENTOML_HOME=str(tmp_path / "bentoml"),
        HTTPS_PORT=str(free_port()),
        HTTP_PORT=str(free_port()),
        SERVICE_PORT=str(free_port()),
        TRAINING_PORT=str(free_port()),
        SERVICE_WORKERS="1",
    )
    out_path, err_path = tmp_path / "up.out", tmp_path / "up.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [str(BIN / "training"), "up"], env=env, cwd=REPO, stdout=out, stderr=err
        )
    try:
        deadline = time.monotonic() + 300
        while "curl " not in out_path.read_text():
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "training up printed no curl"
            time.sleep(0.5)
        printed = out_path.read_text()
        assert f"https://localhost:{env['HTTPS_PORT']}" in printed
        ca = next(line.split()[-1] for line in printed.splitlines() if "CA file" in line)
        assert ca.endswith("pki/authorities/local/root.crt") and Path(ca).is_file()
        curl = next(line for line in printed.splitlines() if line.startswith("curl "))
        assert "--cacert" in curl and " -k" not in curl and "--insecure" not in curl
        answer = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=30)
        assert answer.returncode == 0, answer.stderr
        body = json.loads(answer.stdout)
        assert body["predictions"] and body["model_tag"].startswith("iris-logistic_regression:")
        training = [line for line in printed.splitlines() if line.startswith("curl ")][1]
        assert training.endswith("/training/runs") and "--cacert" in training
        started = subprocess.run(shlex.split(training), capture_output=True, text=True, timeout=30)
        assert json.loads(started.stdout)["status"] == "QUEUED"

        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("caddy" in " ".join(c.cmdline()) for c in children)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        time.sleep(1)
        assert not [
            c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
        ]
    finally:
        if proc.poll() is None:
            stop_process_tree(proc)


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

"""`training` as its own process: console script, --debug, Ctrl-C and SIGTERM, many writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from training.store.db import Database
from training.store.registry import Registry
from training.store.runs import RunStore
from training.store.search import RunSearch

TRAINING = str(Path(sys.executable).with_name("training"))


@pytest.fixture
def proc_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        DATA_DIR=str(tmp_path / "data"),
        BENTOML_HOME=str(tmp_path / "bentoml"),
        BENTOML_DO_NOT_TRACK="true",
    )
    return env


def store_of(env: dict[str, str]) -> RunStore:
    return RunStore(Database(f"sqlite:///{env['DATA_DIR']}/sql_app.db"))


def test_debug_shows_the_traceback_that_is_otherwise_hidden(proc_env: dict[str, str]) -> None:
    args = ["train", "--dataset", "nope.csv", "--model", "ridge"]
    plain = subprocess.run(
        [TRAINING, *args], env=proc_env, capture_output=True, text=True, timeout=120
    )
    assert plain.returncode == 2 and plain.stderr == "error: dataset file not found: nope.csv\n"
    debug = subprocess.run(
        [TRAINING, "--debug", *args], env=proc_env, capture_output=True, text=True, timeout=120
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_python_dash_m_runs_the_same_cli(proc_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "training", "db", "current", "--json"],
        env=proc_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and '"current"' in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_is_recorded_killed_and_leaves_no_model(
    proc_env: dict[str, str], sig: int
) -> None:
    proc = subprocess.Popen(
        [
            TRAINING,
            "train",
            "--dataset",
            "digits",
            "--model",
            "random_forest",
            "--param",
            "n_estimators=400",
            "--cv",
            "5",
        ],
        env=proc_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        store = None
        while time.monotonic() < deadline:
            if Path(proc_env["DATA_DIR"], "sql_app.db").exists():
                store = store or store_of(proc_env)
                try:
                    runs = store.search(RunSearch.parse()).runs
                except OperationalError:  # the schema is still being created
                    runs = []
                if runs and (runs[0].stage or "").startswith("cross-validation"):
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the run never reached cross-validation")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    [run] = store.search(RunSearch.parse()).runs
    assert run.status == "KILLED" and run.end_time is not None and run.model_tag is None
    assert Registry(store.db).list_models() == []
    models = Path(proc_env["BENTOML_HOME"], "models")
    assert not models.exists() or not any(models.iterdir())


@pytest.mark.slow
def test_eight_writers_at_once_on_one_new_sqlite_file(proc_env: dict[str, str]) -> None:
    procs = [
        subprocess.Popen(
            [
                TRAINING,
                "train",
                "--dataset",
                "iris",
                "--model",
                "logistic_regression",
                "--cv",
                "3",
                "--seed",
                str(seed),
                "--json",
            ],
            env=proc_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(8)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    failed = [err[-800:] for p, (_, err) in zip(procs, outputs, strict=True) if p.returncode]
    assert not failed, failed
    store = store_of(proc_env)
    runs = store.search(RunSearch.parse(), limit=100).runs
    assert len(runs) == 8 and {r.status for r in runs} == {"FINISHED"}
    assert {r.params["seed"] for r in runs} == {str(s) for s in range(8)}
    for run in runs:
        assert {"accuracy", "cv_accuracy_mean", "log_loss"} <= set(run.metrics)
        assert len([p for p in store.metric_history(run.id) if p.key == "cv_fold_accuracy"]) == 3
    assert len(Registry(store.db).list_models()) == 8

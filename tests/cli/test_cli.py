"""Every `training` command in process; mistakes end with one line on stderr and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli.app import main


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:  # type: ignore[type-arg]
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    data: dict = json.loads(out)  # type: ignore[type-arg]
    return data


@pytest.fixture
def two_runs(env: Path, capsys: pytest.CaptureFixture[str]) -> list[dict]:  # type: ignore[type-arg]
    return [
        cli_json(
            capsys,
            "train",
            "--dataset",
            "iris",
            "--model",
            "logistic_regression",
            "--cv",
            "2",
            "--param",
            "C=0.5",
        ),
        cli_json(
            capsys,
            "train",
            "--dataset",
            "iris",
            "--model",
            "random_forest",
            "--cv",
            "0",
            "--param",
            "n_estimators=10",
            "--experiment",
            "forests",
            "--tag",
            "team=vision",
            "--tag",
            "note=[/x] [bold]not markup",
        ),
    ]


def test_train_prints_one_json_object(two_runs: list[dict]) -> None:  # type: ignore[type-arg]
    first = two_runs[0]
    assert set(first) >= {"run_id", "status", "model_tag", "metrics"}
    assert first["status"] == "FINISHED" and first["model_tag"].startswith(
        "iris-logistic_regression:"
    )
    assert 0.0 <= first["metrics"]["accuracy"] <= 1.0


def test_runs_list_filters_orders_and_pages(
    two_runs: list[dict], capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[type-arg]
    data = cli_json(
        capsys, "runs", "list", "--filter", "params.model = random_forest and tags.team = vision"
    )
    assert [r["id"] for r in data["runs"]] == [two_runs[1]["run_id"]]
    data = cli_json(capsys, "runs", "list", "--order-by", "start_time asc", "--limit", "1")
    assert [r["id"] for r in data["runs"]] == [two_runs[0]["run_id"]]
    rest = cli_json(
        capsys,
        "runs",
        "list",
        "--order-by",
        "start_time asc",
        "--page-token",
        data["next_page_token"],
    )
    assert [r["id"] for r in rest["runs"]] == [two_runs[1]["run_id"]] and rest[
        "next_page_token"
    ] is None
    data = cli_json(capsys, "runs", "list", "--experiment", "forests", "--status", "FINISHED")
    assert len(data["runs"]) == 1
    code, out, _ = cli(
        capsys,
        "runs",
        "list",
        "--filter",
        "metrics.accuracy >= 0",
        "--order-by",
        "metrics.accuracy",
    )
    assert code == 0 and two_runs[0]["run_id"][:12] in out and "accuracy" in out


def test_runs_show_and_compare(two_runs: list[dict], capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[type-arg]
    run_id = two_runs[0]["run_id"]
    shown = cli_json(capsys, "runs", "show", run_id[:10])
    assert shown["id"] == run_id and shown["params"]["C"] == "0.5"
    assert shown["dataset"]["columns"][0] == {"name": "sepal_length_cm", "type": "number"}
    assert any(p["key"] == "cv_fold_accuracy" and p["step"] == 2 for p in shown["metric_history"])
    code, out, _ = cli(capsys, "runs", "show", run_id)
    assert code == 0 and "Parameters" in out and "sepal_length_cm" in out
    ids = [r["run_id"] for r in two_runs]
    code, out, _ = cli(capsys, "runs", "show", ids[1])
    assert code == 0 and "[/x] [bold]not markup" in out  # printed as text, never as markup
    compared = cli_json(capsys, "runs", "compare", *ids)
    assert [r["id"] for r in compared["runs"]] == ids
    code, out, _ = cli(capsys, "runs", "compare", *ids)
    assert code == 0 and "* params.model" in out and ids[1][:12] in out


def test_models_promote_rollback_and_alias_history(
    two_runs: list[dict], capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[type-arg]
    tags = [r["model_tag"] for r in two_runs]
    models = cli_json(capsys, "models", "list")
    assert [m["tag"] for m in models["models"]] == tags[::-1]
    assert cli_json(capsys, "promote", tags[0], "--alias", "production")["model_tag"] == tags[0]
    assert cli_json(capsys, "promote", tags[1])["model_tag"] == tags[1]
    assert cli_json(capsys, "rollback", "--alias", "production")["model_tag"] == tags[0]
    history = cli_json(capsys, "aliases", "show", "production")["history"]
    assert [(m["action"], m["to_tag"]) for m in history] == [
        ("promote", tags[0]),
        ("promote", tags[1]),
        ("rollback", tags[0]),
    ]
    assert cli_json(capsys, "models", "list")["models"][1]["aliases"] == ["production"]
    code, out, _ = cli(capsys, "aliases", "list")
    assert code == 0 and "production" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--dataset", "/nowhere/data.csv", "--model", "ridge"], "dataset file not found"),
        (
            ["train", "--dataset", "iris", "--target", "species", "--model", "random_forest"],
            "column 'species' is not in dataset iris",
        ),
        (["train", "--dataset", "iris", "--model", "svm"], "unknown classification model 'svm'"),
        (["train", "--dataset", "iris", "--model", "ridge"], "(it is a regression model)"),
        (
            ["train", "--dataset", "iris", "--model", "random_forest", "--param", "max_depth=-1"],
            "bad parameter for random_forest",
        ),
        (
            ["train", "--dataset", "iris", "--model", "random_forest", "--param", "depth=3"],
            "unknown parameter 'depth'",
        ),
        (
            ["train", "--dataset", "iris", "--model", "random_forest", "--param", "oops"],
            "--param expects key=value",
        ),
        (
            ["train", "--dataset", "iris", "--model", "random_forest", "--cv", "1"],
            "cv: Value error, cv must be 0",
        ),
        (
            ["train", "--dataset", "iris", "--model", "random_forest", "--test-size", "2"],
            "test_size",
        ),
        (["runs", "list", "--filter", "metrics.accuracy > high"], "compares with a number"),
        (["runs", "show", "0123456789abcdef"], "no run"),
        (["promote", "ghost:v1"], "no model version 'ghost:v1'"),
        (["aliases", "show", "staging"], "no alias 'staging'"),
        (["train", "--dataset", "iris"], "train needs --dataset and --model (or --run-id)"),
        (
            ["train", "--dataset", "iris", "--model", "random_forest", "--tag", "k=" + "x" * 9000],
            "tag names must be",
        ),
        (
            [
                "train",
                "--dataset",
                "iris",
                "--model",
                "logistic_regression",
                "--param",
                "class_weight=" + "{" + ",".join(f'"{i}": 1' for i in range(2000)) + "}",
            ],
            "longer than 8000",
        ),
    ],
)
def test_mistakes_end_with_one_line_and_exit_2(
    env: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = cli(capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


def test_a_failed_run_exits_1_naming_the_run(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(
        capsys,
        "train",
        "--dataset",
        "iris",
        "--model",
        "logistic_regression",
        "--param",
        "solver=newton-cg",
        "--param",
        "dual=true",
    )
    last = err.splitlines()[-1]  # above it: the progress lines
    assert code == 1 and last.startswith("error: run ") and " FAILED: ValueError: " in last
    assert "Traceback" not in err
    run_id = last.split()[2]
    shown = cli_json(capsys, "runs", "show", run_id)
    assert shown["status"] == "FAILED" and shown["model_tag"] is None


def test_config_masks_secrets(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.settings import reload

    monkeypatch.setenv(
        "DATABASE_URL", "postgresql+psycopg://trainer:s3cret-pw@db.internal:5432/runs"
    )
    reload()
    code, out, _ = cli(capsys, "config", "--json")
    assert code == 0 and "s3cret-pw" not in out
    assert (
        json.loads(out)["DATABASE_URL"] == "postgresql+psycopg://trainer:***@db.internal:5432/runs"
    )
    code, out, _ = cli(capsys, "config")
    assert "s3cret-pw" not in out and "DATA_DIR" in out


def test_db_commands_and_a_store_behind_the_head(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.store.revision import head_revision

    code, out, _ = cli(capsys, "db", "upgrade")
    assert code == 0 and out == f"run store upgraded: empty -> {head_revision()}\n"
    assert (env / "sql_app.db").is_file()
    assert cli_json(capsys, "db", "current")["up_to_date"] is True
    assert cli_json(capsys, "db", "check")["ok"] is True
    assert cli(capsys, "db", "downgrade", "0001")[0] == 0  # a store left at the first schema
    code, out, _ = cli(capsys, "db", "check")
    assert code == 1 and "behind: at 0001" in out
    code, _, err = cli(capsys, "runs", "list")
    assert code == 2 and err == (
        f"error: the run store is at revision 0001, behind {head_revision()}: "
        "run `training db upgrade`\n"
    )
    assert cli(capsys, "db", "upgrade")[0] == 0
    assert cli_json(capsys, "runs", "list")["runs"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "max_depth"], "--grid expects KEY=VALUE"),
        (["--range", "max_depth=3-9", "--samples", "2"], "expected LOW..HIGH"),
        (["--range", "max_depth=3..9"], "give samples"),
        (["--grid", "max_depth=2,-1"], "max_depth=-1"),
    ],
)
def test_sweep_mistakes_end_with_one_line_and_exit_2(
    env: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = cli(capsys, "sweep", "--dataset", "iris", "--model", "random_forest", *args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert cli_json(capsys, "sweeps", "list")["sweeps"] == []


def test_a_sweep_whose_cluster_is_out_of_reach_records_nothing_and_exits_75(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.settings import reload

    monkeypatch.setenv("TRAINING_CLUSTER", "tcp://127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("TRAINING_CLUSTER_TIMEOUT_S", "1")
    reload()
    args = ("sweep", "--dataset", "diabetes", "--model", "ridge", "--grid", "alpha=1,2")
    code, _, err = cli(capsys, *args, "--cv", "0")
    assert code == 75 and "cannot reach the training cluster at tcp://127.0.0.1:1" in err
    assert cli_json(capsys, "sweeps", "list")["sweeps"] == []
    assert cli_json(capsys, "runs", "list")["runs"] == []

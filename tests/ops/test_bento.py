"""`training build` from a clean checkout -> bento -> `bentoml serve <tag>`, and the exported
archive on an empty host.

The build runs from a copy of what git would commit (tracked files and new ones it does not
ignore, no caches, no build leftovers), with that copy's own code: a bento that serves here
was built from the repository, not from whatever else lies in this working tree.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest

from servers import BIN, REPO, base_env, free_port, running

pytestmark = pytest.mark.slow

ROWS = [
    {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2},
    {"sepal_length_cm": 6.0, "sepal_width_cm": 2.7, "petal_length_cm": 5.1, "petal_width_cm": 1.6},
    {"sepal_length_cm": 6.7, "sepal_width_cm": 3.1, "petal_length_cm": None, "petal_width_cm": 1.5},
]
EXPECTED = """
import json, sys
import bentoml
from training.serving.features import FeatureSchema
model = bentoml.models.get(sys.argv[1])
schema = FeatureSchema.model_validate(model.info.metadata["features"])
rows = json.loads(sys.argv[2])
print(json.dumps(bentoml.sklearn.load_model(model).predict(schema.to_matrix(rows)).tolist()))
"""


def clean_checkout(into: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is not committed
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


def training(checkout: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    """`training ARGS --json` run from the checkout, with the checkout's own package."""
    done = subprocess.run(
        [sys.executable, "-m", "training", *args, "--json"],
        env={**env, "PYTHONPATH": str(checkout / "src")},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=checkout,
    )
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def serve_bento(tag: str, env: dict[str, str], log: Path) -> Any:
    port = free_port()
    return running(
        [str(BIN / "bentoml"), "serve", tag, "--port", str(port)],
        env=env,
        log=log,
        ready_url=f"http://127.0.0.1:{port}/readyz",
        cwd=log.parent,
    )


def test_build_serve_export_and_serve_on_an_empty_host(tmp_path: Path) -> None:
    env = base_env(
        DATA_DIR=str(tmp_path / "data"), BENTOML_HOME=str(tmp_path / "home"), SERVICE_WORKERS="1"
    )
    checkout = clean_checkout(tmp_path / "checkout")
    assert not list(checkout.rglob("__pycache__")) and (checkout / "bentofile.yaml").is_file()
    done = subprocess.run(
        [str(BIN / "training"), "build"], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 2 and done.stderr.startswith("error: no alias 'production'")

    trained = training(
        checkout, env, "train", "--dataset", "iris", "--model", "logistic_regression", "--cv", "0"
    )
    training(checkout, env, "promote", trained["model_tag"], "--alias", "production")
    built = training(checkout, env, "build", "--out", str(tmp_path / "bentos"))
    assert built["model_tag"] == trained["model_tag"] and built["alias"] == "production"
    archive = Path(built["archive"])
    assert archive.is_file() and archive.parent == tmp_path / "bentos" and built["size_bytes"] > 0

    expected = json.loads(
        subprocess.run(
            [sys.executable, "-c", EXPECTED, trained["model_tag"], json.dumps(ROWS)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )

    # The built bento, served as the container would serve it.
    with serve_bento(built["bento_tag"], env, tmp_path / "serve-built.log") as server:
        body = httpx.post(f"{server.url}/predict", json={"instances": ROWS}, timeout=30).json()
        assert body["predictions"] == expected and body["model_tag"] == trained["model_tag"]

    # The ops host: an empty BentoML home, the archive, and no run database anywhere.
    ops = base_env(
        BENTOML_HOME=str(tmp_path / "ops-home"),
        SERVICE_WORKERS="1",
        DATA_DIR=str(tmp_path / "nowhere"),
        DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none",
    )
    subprocess.run(
        [str(BIN / "bentoml"), "import", str(archive)], env=ops, check=True, capture_output=True
    )
    with serve_bento(built["bento_tag"], ops, tmp_path / "serve-ops.log") as server:
        response = httpx.post(f"{server.url}/predict", json={"instances": ROWS}, timeout=30)
        assert response.json()["predictions"] == expected
        assert response.headers["x-run-id"] == trained["run_id"]
        card = httpx.get(f"{server.url}/model").json()
        assert card["model_tag"] == trained["model_tag"] and card["run_id"] == trained["run_id"]
    assert not (tmp_path / "nowhere").exists()

    bento_dir = tmp_path / "ops-home" / "bentos" / "prediction" / built["bento_tag"].split(":")[1]
    # The runtime package whole, and nothing else of ours.
    carried = bento_dir / "src" / "training"
    assert sorted(p.name for p in carried.iterdir()) == ["__init__.py", "serving"]
    runtime = sorted(p.name for p in (checkout / "src" / "training" / "serving").glob("*.py"))
    assert sorted(p.name for p in (carried / "serving").glob("*.py")) == runtime
    dockerfile = (bento_dir / "env" / "docker" / "Dockerfile").read_text()
    requirements = (bento_dir / "env" / "python" / "requirements.txt").read_text().splitlines()
    assert "FROM python:3.11-slim" in dockerfile and "requirements.txt" in dockerfile
    assert "ENV SERVICE_HOST=$SERVICE_HOST" in dockerfile
    # The pins are uv.lock's: exactly the versions this test environment runs.
    for package in ("scikit-learn", "bentoml", "numpy", "fastapi", "pydantic"):
        pin = f"{package}=={metadata.version(package)}"
        assert any(line.split(";")[0].strip() == pin for line in requirements), pin

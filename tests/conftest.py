"""Fixtures: migrated temp run stores (SQLite and PostgreSQL), a temp BentoML home, a tiny model.

BentoML reads BENTOML_HOME once per process, so this test process gets one private home for
the whole session, set before anything imports bentoml; tests that need an empty home of their
own run BentoML in a subprocess.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="training-tests-"))
os.environ["BENTOML_HOME"] = str(_SESSION_HOME / "bentoml")
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
os.environ.pop("DATABASE_URL", None)

import pytest  # noqa: E402

from training.settings import Settings, reload  # noqa: E402
from training.store.db import Database  # noqa: E402
from training.store.registry import Registry  # noqa: E402
from training.store.runs import RunStore  # noqa: E402

if TYPE_CHECKING:
    from servers import Server

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REPO = Path(__file__).resolve().parents[1]


def postgres_reason() -> str | None:
    """None when PostgreSQL answers; otherwise why not (an error when REQUIRE_POSTGRES=1)."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}"
    return None


@pytest.fixture(scope="session")
def postgres_available() -> None:
    reason = postgres_reason()
    if reason is None:
        return
    if os.environ.get("REQUIRE_POSTGRES") == "1":
        pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def postgres_url(postgres_available: None) -> Iterator[str]:
    """A URL whose search_path is a fresh schema of its own, dropped afterwards."""
    import sqlalchemy

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings pointing at a temp data folder (and its SQLite store); cache cleared both ways."""
    data = tmp_path / "data"
    monkeypatch.setenv("DATA_DIR", str(data))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    reload()
    yield data
    reload()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    from training.store import revision

    database = Database(db_url)
    revision.upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def store(db: Database) -> RunStore:
    return RunStore(db)


@pytest.fixture
def registry(db: Database) -> Registry:
    return Registry(db)


# -- trained models and served services, shared by the whole session --------------------------


@pytest.fixture(scope="session")
def session_home() -> Path:
    return _SESSION_HOME


@pytest.fixture(scope="session")
def model_store(session_home: Path) -> RunStore:
    from training.store import revision

    database = Database(f"sqlite:///{session_home / 'models.db'}")
    revision.upgrade(database)
    return RunStore(database)


def _train(store: RunStore, **request: object) -> str:
    from training.learning.pipeline import train
    from training.learning.request import TrainRequest

    result = train(TrainRequest(cv=0, **request), Settings(), store, lambda stage, fraction: None)  # type: ignore[arg-type]
    assert result.model_tag is not None
    return result.model_tag


@pytest.fixture(scope="session")
def iris_model(model_store: RunStore) -> str:
    return _train(model_store, dataset="iris", model="logistic_regression")


@pytest.fixture(scope="session")
def mixed_model(model_store: RunStore, session_home: Path) -> str:
    """A classifier over a number, a text and a boolean column, with missing values."""
    import numpy as np

    rng = np.random.default_rng(1)
    lines = ["size,colour,indoor,label"]
    for i in range(120):
        colour = ("red", "blue", "green")[i % 3]
        size = "" if i % 11 == 0 else f"{rng.normal(10 if colour == 'red' else 4):.2f}"
        indoor, label = ("true" if i % 2 else "false"), ("big" if colour == "red" else "small")
        lines.append(f"{size},{colour},{indoor},{label}")
    path = session_home / "things.csv"
    path.write_text("\n".join(lines) + "\n")
    return _train(
        model_store,
        dataset=str(path),
        target="label",
        model="random_forest",
        params={"n_estimators": 20},
    )


@pytest.fixture(scope="session")
def regression_model(model_store: RunStore) -> str:
    return _train(model_store, dataset="diabetes", model="ridge")


# -- the served models: one `bentoml serve` each for the whole session, shared by the tests of
# the native API (test_service.py) and of the Open Inference Protocol (test_oip.py) ----------


def _served(tag: str, home: Path, factory: pytest.TempPathFactory, **env: str) -> Iterator[Server]:
    from servers import serve_model

    log = factory.mktemp(tag.split(":", maxsplit=1)[0]) / "serve.log"
    with serve_model(tag, bentoml_home=home / "bentoml", log=log, **env) as server:
        yield server


@pytest.fixture(scope="session")
def iris(
    iris_model: str, session_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The iris model served with small limits the tests reach: 50 rows, a 2 s timeout; and a
    hold file (absent: in rotation) a test may write, as a rollout does."""
    hold = tmp_path_factory.mktemp("iris-hold") / "hold"
    yield from _served(
        iris_model,
        session_home,
        tmp_path_factory,
        PREDICT_MAX_ROWS="50",
        REQUEST_TIMEOUT_S="2",
        SERVICE_HOLD_FILE=str(hold),
    )


@pytest.fixture(scope="session")
def mixed(
    mixed_model: str, session_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The forest over a number, a text and a boolean feature (dear enough to batch)."""
    yield from _served(mixed_model, session_home, tmp_path_factory)


@pytest.fixture(scope="session")
def regression(
    regression_model: str, session_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from _served(regression_model, session_home, tmp_path_factory)

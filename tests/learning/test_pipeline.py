"""train -> evaluate -> record -> save, in process, against a migrated SQLite store."""

from __future__ import annotations

from pathlib import Path

import bentoml
import numpy as np
import pytest

from training.errors import TrainingFailed
from training.learning.pipeline import execute, plan, train
from training.learning.request import TrainRequest
from training.serving.features import FeatureSchema
from training.settings import Settings, load
from training.store.registry import Registry
from training.store.runs import RunStore
from training.store.search import RunSearch

STAGES: list[str] = []


def record(stage: str, fraction: float) -> None:
    STAGES.append(stage)


def models_of_run(run_id: str) -> list[str]:
    return [str(m.tag) for m in bentoml.models.list() if m.info.labels.get("run_id") == run_id]


def test_iris_run_is_recorded_and_its_model_serves_raw_rows(
    store: RunStore, registry: Registry
) -> None:
    STAGES.clear()
    result = train(
        TrainRequest(dataset="iris", model="logistic_regression", cv=3),
        load(Settings),
        store,
        record,
    )
    assert result.status == "FINISHED"
    assert (
        STAGES[0] == "loading"
        and "cross-validation fold 3 of 3" in STAGES
        and STAGES[-1] == "finished"
    )

    run = store.get_run(result.run_id)
    assert run.status == "FINISHED" and run.model_tag == result.model_tag
    assert run.params["model"] == "logistic_regression" and run.params["C"] == "1.0"
    for key in (
        "accuracy",
        "balanced_accuracy",
        "f1_macro",
        "roc_auc",
        "log_loss",
        "cv_accuracy_mean",
        "cv_accuracy_std",
    ):
        assert key in run.metrics
    assert run.metrics["accuracy"] > 0.8
    assert run.dataset.classes == ["setosa", "versicolor", "virginica"]
    assert run.dataset.sha256 and run.dataset.rows == 150
    assert run.environment["libraries"]["scikit-learn"]
    assert [p.step for p in store.metric_history(run.id) if p.key == "cv_fold_accuracy"] == [
        1,
        2,
        3,
    ]
    assert [v.tag for v in registry.list_models()] == [result.model_tag]

    model = bentoml.models.get(result.model_tag)
    assert model.info.labels["run_id"] == run.id
    schema = FeatureSchema.model_validate(model.info.metadata["features"])
    assert schema.names == [
        "sepal_length_cm",
        "sepal_width_cm",
        "petal_length_cm",
        "petal_width_cm",
    ]
    pipeline = bentoml.sklearn.load_model(model)
    row = {
        "sepal_length_cm": 5.1,
        "sepal_width_cm": 3.5,
        "petal_length_cm": 1.4,
        "petal_width_cm": 0.2,
    }
    assert pipeline.predict(schema.to_matrix([row])).tolist() == ["setosa"]


def test_csv_with_text_columns_and_missing_values(tmp_path: Path, store: RunStore) -> None:
    rng = np.random.default_rng(0)
    lines = ["size,colour,weight,label"]
    for i in range(80):
        colour = ["red", "blue", "green"][i % 3]
        size = "" if i % 7 == 0 else f"{rng.normal(10 if colour == 'red' else 5):.2f}"
        lines.append(f"{size},{colour},{rng.normal():.3f},{'big' if colour == 'red' else 'small'}")
    path = tmp_path / "things.csv"
    path.write_text("\n".join(lines) + "\n")
    result = train(
        TrainRequest(dataset=str(path), model="random_forest", params={"n_estimators": 10}),
        load(Settings),
        store,
        record,
    )
    model = bentoml.models.get(result.model_tag)
    schema = FeatureSchema.model_validate(model.info.metadata["features"])
    pipeline = bentoml.sklearn.load_model(model)
    rows = [
        {"size": None, "colour": "red", "weight": 0.1},
        {"size": 4.0, "colour": "blue", "weight": None},
    ]
    assert pipeline.predict(schema.to_matrix(rows)).tolist() == ["big", "small"]


def test_a_rare_class_and_a_boolean_column_with_gaps(tmp_path: Path, store: RunStore) -> None:
    """A class with two rows cannot fill five stratified folds, and pandas reads True/False
    with gaps as an object column: both must still train, and serve raw rows."""
    lines = ["size,indoor,kind"]
    for i in range(60):
        indoor = "" if i % 9 == 0 else ("True" if i % 2 else "False")
        lines.append(f"{i % 10},{indoor},{'rare' if i < 2 else ('a' if i % 2 else 'b')}")
    path = tmp_path / "rare.csv"
    path.write_text("\n".join(lines) + "\n")
    request = TrainRequest(dataset=str(path), model="logistic_regression", cv=5)
    result = train(request, load(Settings), store, record)
    assert result.status == "FINISHED" and "log_loss" in result.metrics
    model = bentoml.models.get(result.model_tag)
    schema = FeatureSchema.model_validate(model.info.metadata["features"])
    assert [f.type for f in schema.features] == ["number", "boolean"]
    rows = [{"size": 3, "indoor": True}, {"size": 4, "indoor": None}]
    assert len(bentoml.sklearn.load_model(model).predict(schema.to_matrix(rows))) == 2


@pytest.mark.parametrize(
    ("dataset", "model", "metric"),
    [
        ("breast_cancer", "gradient_boosting", "roc_auc"),
        ("wine", "hist_gradient_boosting", "accuracy"),
        ("diabetes", "ridge", "rmse"),
        ("diabetes", "random_forest", "r2"),
        ("diabetes", "gradient_boosting", "mae"),
    ],
)
def test_each_task_and_algorithm(store: RunStore, dataset: str, model: str, metric: str) -> None:
    params = {"n_estimators": 10} if model in ("random_forest", "gradient_boosting") else {}
    result = train(
        TrainRequest(dataset=dataset, model=model, params=params, cv=0),
        load(Settings),
        store,
        record,
    )
    assert metric in result.metrics and result.status == "FINISHED"


def test_a_run_that_fails_after_starting_is_recorded_failed_without_a_model(
    store: RunStore, registry: Registry
) -> None:
    request = TrainRequest(
        dataset="iris", model="logistic_regression", params={"solver": "newton-cg", "dual": True}
    )
    with pytest.raises(TrainingFailed) as info:
        train(request, load(Settings), store, record)
    run = store.get_run(info.value.run_id)
    assert run.status == "FAILED" and run.end_time is not None
    assert run.error is not None and "dual=False" in run.error
    assert registry.list_models() == [] and models_of_run(run.id) == []


def test_an_interrupt_after_the_model_is_saved_takes_it_back(
    store: RunStore, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_finish = store.finish

    def interrupted_finish(run_id: str, status: str, **kwargs: object) -> None:
        if status == "FINISHED":
            raise KeyboardInterrupt
        real_finish(run_id, status, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "finish", interrupted_finish)
    checked = plan(TrainRequest(dataset="iris", model="logistic_regression", cv=0), load(Settings))
    with pytest.raises(KeyboardInterrupt):
        execute(checked, store, record)
    [run] = store.search(RunSearch.parse()).runs
    assert run.status == "KILLED" and run.error == "interrupted"
    assert registry.list_models() == [] and models_of_run(run.id) == []

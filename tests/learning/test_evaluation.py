"""The held-out split's artefacts: pure functions of a fitted model and data, bounded in size,
JSON as they are recorded, and recorded by the pipeline in the transaction that ends the run."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge

from training.errors import TrainingFailed
from training.learning import evaluation
from training.learning.estimators import make_pipeline_for
from training.learning.pipeline import train
from training.learning.request import TrainRequest
from training.serving.features import Feature, FeatureSchema
from training.settings import Settings, load
from training.store.records import Evaluation
from training.store.runs import RunStore

RNG = np.random.default_rng(3)
SCHEMA = FeatureSchema(
    (
        Feature(name="size", type="number"),
        Feature(name="colour", type="string", categories=("blue", "green", "red")),
        Feature(name="noise", type="number"),
    )
)


def _data(n: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    colour = RNG.choice(["blue", "green", "red"], n)
    size = RNG.normal(size=n) + (colour == "red") * 3
    X = np.column_stack([size, colour, RNG.normal(size=n)]).astype(object)
    X[:, 0] = X[:, 0].astype(float)
    X[:, 2] = X[:, 2].astype(float)
    labels = np.array(["a", "b", "c"][:classes])
    y = labels[(size > 1).astype(int) + (classes == 3) * (colour == "blue")]
    return X, y


def _fitted(estimator: object, X: np.ndarray, y: np.ndarray) -> object:
    return make_pipeline_for(SCHEMA, estimator).fit(X, y)


def test_a_binary_classifier_gives_its_matrix_one_roc_curve_and_importances_per_column() -> None:
    X, y = _data(400, 2)
    model = _fitted(RandomForestClassifier(n_estimators=20, random_state=0), X, y)
    found = evaluation.held_out("classification", model, X, y, ["a", "b"], SCHEMA.names)
    assert found.confusion is not None and found.confusion.labels == ["a", "b"]
    counts = np.array(found.confusion.counts)
    assert counts.sum() == 400 and np.trace(counts) == (model.predict(X) == y).sum()
    [curve] = found.roc
    assert curve.label == "b" and curve.fpr[0] == curve.tpr[0] == 0 and curve.fpr[-1] == 1
    assert np.all(np.diff(curve.fpr) >= 0) and np.all(np.diff(curve.tpr) >= 0)
    expected = skm.roc_auc_score(y == "b", model.predict_proba(X)[:, 1])
    assert curve.auc == pytest.approx(expected) and len(curve.fpr) <= evaluation.ROC_POINTS
    # One value per input column, the one-hot columns of the text one summed into it.
    assert found.importance_kind == "impurity"
    assert sorted(i.feature for i in found.importances) == sorted(SCHEMA.names)
    assert sum(i.value for i in found.importances) == pytest.approx(1.0)
    assert found.importances[0].feature == "size"
    assert Evaluation.model_validate_json(found.model_dump_json()) == found


def test_one_curve_per_class_and_none_for_a_class_the_held_out_rows_lack() -> None:
    X, y = _data(300, 3)
    model = _fitted(LogisticRegression(max_iter=500), X, y)
    found = evaluation.held_out("classification", model, X, y, ["a", "b", "c"], SCHEMA.names)
    assert [c.label for c in found.roc] == ["a", "b", "c"]
    assert found.importance_kind == "coefficient" and len(found.importances) == 3
    lacking = y != "c"
    partial = evaluation.held_out(
        "classification", model, X[lacking], y[lacking], ["a", "b", "c"], SCHEMA.names
    )
    assert [c.label for c in partial.roc] == ["a", "b"]
    assert partial.confusion is not None and partial.confusion.counts[2] == [0, 0, 0]


def test_an_estimator_without_importances_has_none_and_many_classes_have_no_curves() -> None:
    X, y = _data(200, 2)
    model = _fitted(HistGradientBoostingClassifier(max_iter=10), X, y)
    found = evaluation.held_out("classification", model, X, y, ["a", "b"], SCHEMA.names)
    assert found.importances == [] and found.importance_kind is None
    many = [f"k{i}" for i in range(evaluation.ROC_MAX_CLASSES + 1)]
    assert evaluation.roc_curves(model, X, y, many) == []


def test_a_regressor_gives_a_bounded_sample_and_the_residuals_of_every_row() -> None:
    X, _ = _data(2000, 2)
    y = X[:, 0].astype(float) * 3 + RNG.normal(size=2000)
    model = _fitted(Ridge(), X, y)
    found = evaluation.held_out("regression", model, X, y, None, SCHEMA.names)
    residuals = found.residuals
    assert residuals is not None and found.confusion is None and found.roc == []
    error = y - model.predict(X)
    assert residuals.mean == pytest.approx(error.mean()) and residuals.mae == pytest.approx(
        np.abs(error).mean()
    )
    assert residuals.quantiles["p50"] == pytest.approx(np.median(error))
    assert sum(residuals.counts) == 2000 and len(residuals.bins) == evaluation.HISTOGRAM_BINS + 1
    assert len(residuals.actual) == len(residuals.predicted) == evaluation.SAMPLE_POINTS
    again = evaluation.held_out("regression", model, X, y, None, SCHEMA.names)
    assert again == found  # the same sample every time
    assert found.importance_kind == "coefficient" and found.importances[0].feature == "size"


def test_the_pipeline_records_the_artefacts_with_the_runs_end(store: RunStore) -> None:
    result = train(
        TrainRequest(dataset="wine", model="random_forest", params={"n_estimators": 10}, cv=0),
        load(Settings),
        store,
        lambda stage, fraction: None,
    )
    found = store.evaluation(result.run_id[:8])
    assert found is not None and found.rows == 36  # 20% of 178 rows
    assert found.confusion is not None and len(found.confusion.labels) == 3
    assert {c.label for c in found.roc} == set(found.confusion.labels)
    assert found.importances and found.importance_kind == "impurity"


def test_a_run_that_fails_records_no_artefacts(store: RunStore) -> None:
    request = TrainRequest(
        dataset="iris", model="logistic_regression", params={"solver": "newton-cg", "dual": True}
    )
    with pytest.raises(TrainingFailed) as failed:
        train(request, load(Settings), store, lambda stage, fraction: None)
    assert store.evaluation(failed.value.run_id) is None

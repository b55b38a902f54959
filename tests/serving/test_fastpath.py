"""The serving form equals scikit-learn, is stored with the model, and spares a worker the
pipeline when it answers alone; otherwise it is not used at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from training.serving.card import ModelCard
from training.serving.fastpath import (
    SERVING_FILE,
    _probe,
    describe,
    models_of,
    read_form,
    transform_of,
)
from training.serving.features import FeatureSchema
from training.serving.predictor import Predictor


def load(tag: str) -> tuple[Any, FeatureSchema]:
    model = bentoml.models.get(tag)
    return bentoml.sklearn.load_model(model), FeatureSchema.model_validate(
        model.info.metadata["features"]
    )


def folder(tag: str) -> Path:
    return Path(bentoml.models.get(tag).path)


def never() -> Any:
    raise AssertionError("the pipeline was loaded")


def test_numeric_and_mixed_pipelines_agree_with_scikit_learn(
    iris_model: str, mixed_model: str
) -> None:
    for tag in (iris_model, mixed_model):
        pipeline, schema = load(tag)
        form = describe(pipeline, schema)
        assert form is not None, tag
        X = _probe(schema, 500)
        Z = transform_of(form.preprocessing)(X)
        estimator = pipeline.steps[-1][1]
        assert np.array_equal(estimator.predict(Z), pipeline.predict(X))
        assert np.array_equal(estimator.predict_proba(Z), pipeline.predict_proba(X))


def test_a_linear_model_is_served_from_its_stored_form_alone(
    iris_model: str, regression_model: str
) -> None:
    for tag, methods in (
        (iris_model, ["predict", "predict_proba"]),
        (regression_model, ["predict"]),
    ):
        form = read_form(folder(tag))
        assert form is not None and form.linear is not None and form.covers(methods), tag
        pipeline, schema = load(tag)
        X = _probe(schema, 300)
        Z = transform_of(form.preprocessing)(X)
        for method, function in models_of(form.linear).items():
            got, expected = function(Z), getattr(pipeline, method)(X)
            if expected.dtype.kind == "f":
                assert np.allclose(got, expected, rtol=1e-9), method
            else:  # labels, exactly as the answer carries them
                assert got.tolist() == expected.tolist(), method
        card = ModelCard.from_stored(bentoml.models.get(tag))
        rows = schema.sample_rows(20)
        predictor = Predictor(card, form, never)  # answers without unpickling anything
        assert predictor.pipeline is None
        answer, expected = predictor.one("predict", rows), pipeline.predict(schema.to_matrix(rows))
        assert (
            np.allclose(answer, expected, rtol=1e-9)
            if card.task == "regression"
            else (answer == expected.tolist())
        )


def test_a_forest_is_preprocessed_from_its_form_and_predicted_by_scikit_learn(
    mixed_model: str,
) -> None:
    form = read_form(folder(mixed_model))
    assert form is not None and form.linear is None and not form.covers(["predict"])
    pipeline, schema = load(mixed_model)
    card = ModelCard.from_stored(bentoml.models.get(mixed_model))
    predictor = Predictor(card, form, lambda: pipeline)
    rows = schema.sample_rows(30)
    assert predictor.pipeline is pipeline
    assert predictor.one("predict", rows) == pipeline.predict(schema.to_matrix(rows)).tolist()


def test_a_model_saved_without_a_form_gets_one_described_at_start(
    iris_model: str, tmp_path: Path
) -> None:
    assert (folder(iris_model) / SERVING_FILE).is_file()
    assert read_form(tmp_path) is None  # an older model's folder
    pipeline, schema = load(iris_model)
    card = ModelCard.from_stored(bentoml.models.get(iris_model))
    predictor = Predictor(card, None, lambda: pipeline)
    rows = schema.sample_rows(10)
    assert predictor.one("predict_proba", rows) == [
        dict(zip(map(str, card.classes), p, strict=True))
        for p in pipeline.predict_proba(schema.to_matrix(rows)).tolist()
    ]


def test_an_unknown_pipeline_shape_falls_back(mixed_model: str) -> None:
    _, schema = load(mixed_model)
    X = _probe(schema, 50)
    y = np.arange(50) % 2
    sparse = Pipeline(
        [
            ("preprocess", ColumnTransformer([("strings", OneHotEncoder(), [1])])),
            ("model", LogisticRegression()),
        ]
    ).fit(X, y)
    assert describe(sparse, schema) is None
    assert describe(LogisticRegression(), schema) is None


def test_a_linear_model_that_disagrees_is_left_to_scikit_learn(iris_model: str) -> None:
    pipeline, schema = load(iris_model)
    estimator = pipeline.steps[-1][1]
    original = estimator.predict_proba
    try:  # as if scikit-learn computed probabilities some other way
        estimator.predict_proba = lambda Z: original(Z)[:, ::-1]
        form = describe(pipeline, schema)
    finally:
        del estimator.predict_proba
    assert form is not None and form.linear is not None
    assert form.linear.methods == ["predict"]
    with pytest.raises(AssertionError, match="pipeline was loaded"):
        Predictor(ModelCard.from_stored(bentoml.models.get(iris_model)), form, never)

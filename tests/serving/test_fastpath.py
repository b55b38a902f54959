"""The service's numpy preprocessing equals scikit-learn's, or is not used at all."""

from __future__ import annotations

from typing import Any

import bentoml
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from training.serving.fastpath import _probe, compile_preprocessing
from training.serving.features import FeatureSchema


def load(tag: str) -> tuple[Any, FeatureSchema]:
    model = bentoml.models.get(tag)
    return bentoml.sklearn.load_model(model), FeatureSchema.model_validate(
        model.info.metadata["features"]
    )


def test_numeric_and_mixed_pipelines_compile_and_agree(iris_model: str, mixed_model: str) -> None:
    for tag in (iris_model, mixed_model):
        pipeline, schema = load(tag)
        transform = compile_preprocessing(pipeline, schema)
        assert transform is not None, tag
        X = _probe(schema, 500)
        estimator = pipeline.steps[-1][1]
        assert np.array_equal(estimator.predict(transform(X)), pipeline.predict(X))
        assert np.array_equal(estimator.predict_proba(transform(X)), pipeline.predict_proba(X))


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
    assert compile_preprocessing(sparse, schema) is None
    assert compile_preprocessing(LogisticRegression(), schema) is None

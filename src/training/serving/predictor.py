"""Predictions from the served pipeline: lean calls on validated rows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sklearn

from training.serving.card import ModelCard
from training.serving.fastpath import compile_preprocessing


class PredictionError(ValueError):
    """Validated rows the model still cannot answer for (say, values far outside training)."""


class Predictor:
    """Predictions for validated rows; one numpy matrix and one pipeline call per request."""

    def __init__(self, pipeline: Any, card: ModelCard) -> None:
        self.pipeline = pipeline
        self.schema = card.features
        self.estimator = pipeline.steps[-1][1]
        self.preprocess = compile_preprocessing(pipeline, card.features)
        self.is_classifier = card.task == "classification"
        self._classes = [
            c.item() if hasattr(c, "item") else c for c in getattr(pipeline, "classes_", [])
        ]
        self._class_keys = [str(c) for c in self._classes]

    def _call(self, method: str, rows: list[dict[str, Any]]) -> Any:
        X = self.schema.to_matrix(rows)
        # Inputs are validated (finite, typed) before they get here, so scikit-learn's own
        # per-call checks are skipped: they cost more than the model on a single row.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            try:
                if self.preprocess is not None:
                    return getattr(self.estimator, method)(self.preprocess(X))
                return getattr(self.pipeline, method)(X)
            except ValueError as exc:
                raise PredictionError(str(exc)) from exc

    def predict(self, rows: list[dict[str, Any]]) -> list[Any]:
        result = self._call("predict", rows)
        values: list[Any] = result.tolist()
        if not self.is_classifier and not all(math.isfinite(v) for v in values):
            bad = next(i for i, v in enumerate(values) if not math.isfinite(v))
            raise PredictionError(
                f"row {bad}: the prediction is not a finite number; its values are far "
                "outside what the model was trained on"
            )
        return values

    def predict_proba(self, rows: list[dict[str, Any]]) -> list[dict[str, float]]:
        proba = self._call("predict_proba", rows)
        if not np.isfinite(proba).all():
            bad = int(np.argwhere(~np.isfinite(proba))[0][0])
            raise PredictionError(
                f"row {bad}: probabilities are not finite; its values are far outside what "
                "the model was trained on"
            )
        keys = self._class_keys
        return [dict(zip(keys, row, strict=True)) for row in proba.tolist()]

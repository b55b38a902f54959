"""The served model: its pipeline, its card (tag, run, schema, metrics) and lean predict calls."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import sklearn

from training.features import FeatureSchema
from training.serving.fastpath import compile_preprocessing


class PredictionError(ValueError):
    """Validated rows the model still cannot answer for (say, values far outside training)."""


@dataclass(frozen=True)
class ModelCard:
    """What GET /model shows, read from the model store's metadata (no run database)."""

    tag: str
    run_id: str
    task: str
    algorithm: str
    experiment: str
    target: str
    features: FeatureSchema
    classes: list[Any]
    metrics: dict[str, float]
    created_at: str
    dataset_sha256: str

    @classmethod
    def from_stored(cls, stored: Any) -> ModelCard:
        meta: dict[str, Any] = stored.info.metadata
        return cls(
            tag=str(stored.tag),
            run_id=str(meta.get("run_id") or stored.info.labels.get("run_id", "")),
            task=str(meta.get("task", "")),
            algorithm=str(meta.get("algorithm", "")),
            experiment=str(meta.get("experiment", "")),
            target=str(meta.get("target", "")),
            features=FeatureSchema.from_json(meta["features"]),
            classes=list(meta.get("classes") or []),
            metrics={k: float(v) for k, v in (meta.get("metrics") or {}).items()},
            created_at=stored.info.creation_time.isoformat(),
            dataset_sha256=str(meta.get("dataset_sha256", "")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "model_tag": self.tag,
            "run_id": self.run_id,
            "task": self.task,
            "algorithm": self.algorithm,
            "experiment": self.experiment,
            "target": self.target,
            "features": self.features.to_json(),
            "classes": self.classes,
            "metrics": self.metrics,
            "created_at": self.created_at,
            "dataset_sha256": self.dataset_sha256,
        }


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

"""Honest evaluation: metrics on a held-out split and k-fold cross-validation on the rest."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm
from sklearn.base import clone
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from training.learning.columns import Task

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")


def _all_classes(proba: npt.NDArray[Any], fitted: list[Any], labels: list[Any]) -> npt.NDArray[Any]:
    """Probabilities over every class of the data set: a model fitted on a fold that lacked a
    rare class gives that class 0 (log loss then clips it, instead of refusing the labels)."""
    if fitted == labels:
        return proba
    full = np.zeros((proba.shape[0], len(labels)))
    for j, label in enumerate(fitted):
        full[:, labels.index(label)] = proba[:, j]
    return full


def score(
    task: Task,
    model: Pipeline,
    X: npt.NDArray[Any],
    y: npt.NDArray[Any],
    labels: list[Any] | None = None,
) -> dict[str, float]:
    """The task's metrics of a fitted model on (X, y); a metric that is undefined is left out.
    ``labels``: every class of the data set (a fold may have seen fewer)."""
    predicted = model.predict(X)
    if task == "regression":
        return {
            "rmse": float(math.sqrt(skm.mean_squared_error(y, predicted))),
            "mae": float(skm.mean_absolute_error(y, predicted)),
            "r2": float(skm.r2_score(y, predicted)),
        }
    result = {
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, predicted)),
        "f1_macro": float(skm.f1_score(y, predicted, average="macro", zero_division=0)),
    }
    if hasattr(model, "predict_proba"):
        fitted = list(model.classes_)
        classes = labels if labels is not None else fitted
        proba = _all_classes(model.predict_proba(X), fitted, classes)
        try:
            # A class absent from this split leaves AUC undefined: left out, not warned about.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                if len(classes) == 2:
                    result["roc_auc"] = float(skm.roc_auc_score(y, proba[:, 1]))
                else:
                    result["roc_auc"] = float(
                        skm.roc_auc_score(
                            y, proba, multi_class="ovr", average="macro", labels=classes
                        )
                    )
        except ValueError:
            pass
        result["log_loss"] = float(skm.log_loss(y, proba, labels=classes))
    return {k: v for k, v in result.items() if math.isfinite(v)}


def folds(task: Task, y: npt.NDArray[Any], k: int, seed: int) -> Iterator[tuple[Any, Any]]:
    """Stratified folds for classes when every class can fill each fold, plain ones otherwise."""
    if task == "classification":
        _, counts = np.unique(y, return_counts=True)
        if counts.min() >= k:
            yield from StratifiedKFold(k, shuffle=True, random_state=seed).split(
                np.zeros(len(y)), y
            )
            return
    yield from KFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)))


def cross_validate(
    task: Task,
    model: Pipeline,
    X: npt.NDArray[Any],
    y: npt.NDArray[Any],
    k: int,
    seed: int,
    labels: list[Any] | None = None,
) -> Iterator[dict[str, float]]:
    """Fit a clone of the model per fold and yield that fold's scores, one fold at a time."""
    for train, test in folds(task, y, k, seed):
        fitted = clone(model).fit(X[train], y[train])
        yield score(task, fitted, X[test], y[test], labels)


def summarize(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """Mean and standard deviation of each metric over the folds."""
    summary: dict[str, float] = {}
    for key in sorted({key for scores in per_fold for key in scores}):
        values = [scores[key] for scores in per_fold if key in scores]
        summary[f"cv_{key}_mean"] = float(np.mean(values))
        summary[f"cv_{key}_std"] = float(np.std(values))
    return summary

"""Honest evaluation: metrics on a held-out split and k-fold cross-validation on the rest, and
the held-out split's artefacts (confusion matrix, ROC curves, residuals, importances).

Everything here is a pure function of a fitted model and data: the process that fits computes
them, whoever records the run writes what they return (``Evaluation`` rides along with the
metrics).
"""

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
from training.store.records import (
    ConfusionMatrix,
    Evaluation,
    Importance,
    Residuals,
    RocCurve,
)

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
# Bounds of what a run records, whatever the size of its data: a page draws them as they are.
SAMPLE_POINTS = 500  # (actual, predicted) pairs of a regressor
ROC_POINTS = 200  # points per ROC curve
ROC_MAX_CLASSES = 10  # one-vs-rest curves beyond this many classes say little
MATRIX_MAX_CLASSES = 50
IMPORTANCES_MAX = 50
HISTOGRAM_BINS = 20


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


# -- the held-out split's artefacts ------------------------------------------------------------


def held_out(
    task: Task,
    model: Pipeline,
    X: npt.NDArray[Any],
    y: npt.NDArray[Any],
    labels: list[Any] | None,
    features: list[str],
) -> Evaluation:
    """What a fitted model shows on its held-out rows, bounded in size whatever their number.
    ``labels``: every class of the data set; ``features``: the input columns, in order."""
    importances, kind = importances_of(model, features)
    predicted = model.predict(X)
    if task == "regression":
        return Evaluation(
            rows=len(y),
            residuals=residuals(y.astype(np.float64), predicted.astype(np.float64)),
            importances=importances,
            importance_kind=kind,
        )
    classes = labels if labels is not None else sorted(np.unique(y).tolist())
    return Evaluation(
        rows=len(y),
        confusion=confusion(y, predicted, classes),
        roc=roc_curves(model, X, y, classes) if hasattr(model, "predict_proba") else [],
        importances=importances,
        importance_kind=kind,
    )


def confusion(
    y: npt.NDArray[Any], predicted: npt.NDArray[Any], classes: list[Any]
) -> ConfusionMatrix | None:
    if len(classes) > MATRIX_MAX_CLASSES:
        return None
    counts = skm.confusion_matrix(y, predicted, labels=classes)
    return ConfusionMatrix(labels=[str(c) for c in classes], counts=counts.tolist())


def _thinned(values: npt.NDArray[Any], keep: npt.NDArray[Any]) -> list[float]:
    return [round(float(v), 6) for v in values[keep]]


def roc_curves(
    model: Pipeline, X: npt.NDArray[Any], y: npt.NDArray[Any], classes: list[Any]
) -> list[RocCurve]:
    """The positive class's curve for two classes, one against the rest for each class
    otherwise; a class the held-out rows lack (or all have) has none."""
    if len(classes) > ROC_MAX_CLASSES:
        return []
    proba = _all_classes(model.predict_proba(X), list(model.classes_), classes)
    positives = [classes[1]] if len(classes) == 2 else classes
    curves = []
    for label in positives:
        truth = y == label
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = skm.roc_curve(truth, proba[:, classes.index(label)])
        keep = np.unique(
            np.linspace(0, len(fpr) - 1, min(len(fpr), ROC_POINTS)).round().astype(int)
        )
        curves.append(
            RocCurve(
                label=str(label),
                fpr=_thinned(fpr, keep),
                tpr=_thinned(tpr, keep),
                auc=float(skm.auc(fpr, tpr)),
            )
        )
    return curves


def residuals(y: npt.NDArray[np.float64], predicted: npt.NDArray[np.float64]) -> Residuals | None:
    finite = np.isfinite(y) & np.isfinite(predicted)
    y, predicted = y[finite], predicted[finite]
    if not len(y):
        return None
    error = y - predicted
    sample = np.arange(len(y))
    if len(y) > SAMPLE_POINTS:  # the same rows every time: a page is reproducible
        sample = np.sort(np.random.default_rng(0).choice(len(y), SAMPLE_POINTS, replace=False))
    counts, edges = np.histogram(error, bins=HISTOGRAM_BINS)
    quantiles = np.quantile(error, [0.05, 0.25, 0.5, 0.75, 0.95])
    return Residuals(
        actual=_thinned(y, sample),
        predicted=_thinned(predicted, sample),
        mean=float(error.mean()),
        std=float(error.std()),
        mae=float(np.abs(error).mean()),
        max_abs=float(np.abs(error).max()),
        quantiles={f"p{q}": float(v) for q, v in zip((5, 25, 50, 75, 95), quantiles, strict=True)},
        bins=[float(e) for e in edges],
        counts=[int(c) for c in counts],
    )


def _column_owners(model: Pipeline) -> list[int]:
    """For each column the preprocessing hands the estimator, the input column it came from
    (a text column's one-hot columns all come from that column)."""
    preprocess = model.steps[0][1]
    owners: list[int] = []
    for name, transformer, columns in preprocess.transformers_:
        if name == "numbers":
            owners.extend(columns)
        elif name == "strings":
            encoder = transformer.steps[-1][1]
            for column, categories in zip(columns, encoder.categories_, strict=True):
                owners.extend([column] * len(categories))
    return owners


def importances_of(model: Pipeline, features: list[str]) -> tuple[list[Importance], str | None]:
    """Per input column: impurity importances of trees, or the mean |coefficient| of linear
    models (on scaled inputs, so comparable); the one-hot columns of a text column summed."""
    estimator = model.steps[-1][1]
    if hasattr(estimator, "feature_importances_"):
        raw, kind = np.asarray(estimator.feature_importances_, dtype=np.float64), "impurity"
    elif hasattr(estimator, "coef_"):
        coef = np.abs(np.asarray(estimator.coef_, dtype=np.float64))
        raw, kind = (coef.mean(axis=0) if coef.ndim == 2 else coef), "coefficient"
    else:
        return [], None
    owners = _column_owners(model)
    if len(owners) != len(raw):
        return [], None
    totals = np.zeros(len(features))
    np.add.at(totals, owners, np.nan_to_num(raw))
    ranked = sorted(zip(features, totals.tolist(), strict=True), key=lambda p: -p[1])
    return [Importance(feature=f, value=v) for f, v in ranked[:IMPORTANCES_MAX]], kind

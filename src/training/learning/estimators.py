"""The catalogue of algorithms, their parameters, and the preprocessing every model carries.

Preprocessing lives inside the saved scikit-learn Pipeline (impute, scale, one-hot encode), so
the served model takes raw rows laid out by ``FeatureSchema.to_matrix``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from training.errors import UserError
from training.learning.columns import Task
from training.learning.request import VALUE_MAX
from training.serving.features import FeatureSchema

CATALOGUE: dict[Task, dict[str, Callable[[], BaseEstimator]]] = {
    "classification": {
        "logistic_regression": lambda: LogisticRegression(max_iter=2000),
        "random_forest": lambda: RandomForestClassifier(n_estimators=100),
        "gradient_boosting": GradientBoostingClassifier,
        "hist_gradient_boosting": HistGradientBoostingClassifier,
    },
    "regression": {
        "ridge": Ridge,
        "linear_regression": LinearRegression,
        "random_forest": lambda: RandomForestRegressor(n_estimators=100),
        "gradient_boosting": GradientBoostingRegressor,
        "hist_gradient_boosting": HistGradientBoostingRegressor,
    },
}


def parse_param_value(raw: str) -> Any:
    """``--param key=value`` values: JSON numbers, booleans, null, lists and objects, otherwise
    a string."""
    if raw in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[raw]
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, (int, float, bool, type(None), list, dict)) else raw


def parse_param_pairs(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param expects key=value, got {pair!r}", field="params")
        params[key.strip()] = parse_param_value(raw.strip())
    return params


def make_estimator(task: Task, model: str, params: Mapping[str, Any], seed: int) -> BaseEstimator:
    """A configured, validated estimator; unknown names and bad values raise UserError."""
    models = CATALOGUE[task]
    if model not in models:
        other: Task = "regression" if task == "classification" else "classification"
        hint = f" (it is a {other} model)" if model in CATALOGUE[other] else ""
        raise UserError(
            f"unknown {task} model {model!r}{hint}; choose one of {', '.join(models)}",
            field="model",
        )
    estimator = models[model]()
    allowed = estimator.get_params(deep=False)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise UserError(
            f"unknown parameter {unknown[0]!r} for {model}; allowed: {', '.join(sorted(allowed))}",
            field="params",
        )
    if "random_state" in allowed and "random_state" not in params:
        estimator.set_params(random_state=seed)
    estimator.set_params(**params)
    try:
        # Raises the same InvalidParameterError fit() would, before any run is recorded.
        estimator._validate_params()
    except (ValueError, TypeError) as exc:
        raise UserError(f"bad parameter for {model}: {exc}", field="params") from exc
    return estimator


def make_pipeline_for(schema: FeatureSchema, estimator: BaseEstimator) -> Pipeline:
    numeric = [i for i, f in enumerate(schema.features) if f.type != "string"]
    strings = [i for i, f in enumerate(schema.features) if f.type == "string"]
    parts: list[tuple[str, Any, list[int]]] = []
    if numeric:
        parts.append(
            ("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric)
        )
    if strings:
        # The categories of the whole data set, fixed up front: a category seen only in a test
        # fold must not break cross-validation; one never seen is refused by the service.
        categories = [list(schema.features[i].categories or ()) for i in strings]
        parts.append(
            (
                "strings",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    # Dense: the service's numpy preprocessing (serving/fastpath.py) matches it.
                    OneHotEncoder(
                        categories=categories, handle_unknown="error", sparse_output=False
                    ),
                ),
                strings,
            )
        )
    return Pipeline([("preprocess", ColumnTransformer(parts)), ("model", estimator)])


def recorded_params(estimator: BaseEstimator) -> dict[str, str]:
    """Every hyper-parameter the estimator ran with, as text, for the run record (a value too
    long for the store's column is refused: the request was out of bounds)."""
    recorded = {
        k: json.dumps(v) if not isinstance(v, str) else v
        for k, v in sorted(estimator.get_params(deep=False).items())
        if _plain(v)
    }
    for key, text in recorded.items():
        if len(text) > VALUE_MAX:
            raise UserError(
                f"parameter {key!r} is longer than {VALUE_MAX} characters", field="params"
            )
    return recorded


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, tuple, dict))

"""The pipeline re-expressed in numpy where it can be, checked against scikit-learn at start-up.

Measured on the iris pipeline: ColumnTransformer.transform costs ~400 us per single-row call,
almost all of it input checking and bookkeeping, against ~2 us for the same arithmetic in
numpy; and with scikit-learn 1.9 a LogisticRegression's own predict costs 170-280 us per call
(input checks, array-API dispatch) for a product and an argmax of ~5 us. So the service runs
the preprocessing here, and a linear model's predict and predict_proba too
(``compile_linear``); any other estimator runs in scikit-learn.

It only knows the shape ``estimators.make_pipeline_for`` builds: a ColumnTransformer of a
numeric branch (SimpleImputer -> StandardScaler) and a text branch (SimpleImputer ->
OneHotEncoder, dense, fixed categories), then the estimator. For anything else, or if the two
disagree on probe rows, ``compile_preprocessing`` returns None and the service calls the whole
pipeline, so a result never depends on this module being right; the same holds for the linear
models (labels must be equal on every probe row, numbers equal to 1e-9).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from training.serving.features import FeatureSchema

Transform = Callable[[npt.NDArray[Any]], npt.NDArray[np.float64]]
Model = Callable[[npt.NDArray[np.float64]], npt.NDArray[Any]]
PROBE_ROWS = 2048


def _steps(branch: Any) -> list[Any]:
    return [step for _, step in getattr(branch, "steps", [])]


def _build(pipeline: Any) -> Transform | None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = pipeline.steps[0][1] if len(getattr(pipeline, "steps", [])) == 2 else None
    if not isinstance(pre, ColumnTransformer) or pre.remainder not in ("drop",):
        return None
    numeric_cols: list[int] = []
    fill: Any = None
    mean: Any = None
    scale: Any = None
    text: list[tuple[int, Any, list[Any]]] = []  # (column, fill value, categories)
    for name, branch, columns in pre.transformers_:
        if name == "remainder":
            continue
        steps = _steps(branch)
        if name == "numbers" and [type(s) for s in steps] == [SimpleImputer, StandardScaler]:
            imputer, scaler = steps
            numeric_cols = list(columns)
            fill = imputer.statistics_.astype(np.float64)
            mean = scaler.mean_ if scaler.with_mean else np.zeros(len(columns))
            scale = scaler.scale_ if scaler.with_std else np.ones(len(columns))
        elif name == "strings" and [type(s) for s in steps] == [SimpleImputer, OneHotEncoder]:
            imputer, encoder = steps
            if getattr(encoder, "sparse_output", True) or encoder.drop is not None:
                return None
            for col, value, categories in zip(
                columns, imputer.statistics_, encoder.categories_, strict=True
            ):
                text.append((col, value, list(categories)))
        else:
            return None
    width = len(numeric_cols) + sum(len(c) for _, _, c in text)

    def transform(X: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        out = np.zeros((X.shape[0], width), dtype=np.float64)
        if numeric_cols:
            block = X[:, numeric_cols].astype(np.float64)
            block = np.where(np.isnan(block), fill, block)
            out[:, : len(numeric_cols)] = (block - mean) / scale
        offset = len(numeric_cols)
        rows = np.arange(X.shape[0])
        for col, value, categories in text:
            values = X[:, col]
            filled = np.where(values != values, value, values)  # noqa: PLR0124 - NaN != NaN
            index = np.searchsorted(np.asarray(categories, dtype=object), filled)
            out[rows, offset + index] = 1.0
            offset += len(categories)
        return out

    return transform


def _probe(schema: FeatureSchema, n: int) -> npt.NDArray[Any]:
    """Rows covering every category, missing values and values inside and beyond training."""
    rng = np.random.default_rng(0)
    columns: list[npt.NDArray[Any]] = []
    for f in schema.features:
        if f.type == "number":
            low = f.minimum if f.minimum is not None else -1.0
            high = f.maximum if f.maximum is not None else 1.0
            span = max(high - low, 1.0)
            col: npt.NDArray[Any] = rng.uniform(low - span, high + span, n)
        elif f.type == "boolean":
            col = rng.integers(0, 2, n).astype(np.float64)
        else:
            cats = list(f.categories or ["?"])
            col = np.array([cats[i % len(cats)] for i in rng.permutation(n)], dtype=object)
        missing = rng.random(n) < 0.1
        col = col.astype(object) if col.dtype == object else col
        col[missing] = np.nan
        columns.append(col)
    dtype = np.float64 if schema.numeric else object
    return np.column_stack(columns).astype(dtype)


def compile_preprocessing(pipeline: Any, schema: FeatureSchema) -> Transform | None:
    """A numpy transform equal to the pipeline's preprocessing on probe rows, or None."""
    transform = _build(pipeline)
    if transform is None:
        return None
    probe = _probe(schema, PROBE_ROWS)
    expected = pipeline.steps[0][1].transform(probe)
    if hasattr(expected, "toarray"):
        return None
    got = transform(probe)
    return transform if got.shape == expected.shape and np.array_equal(got, expected) else None


def _linear_functions(estimator: Any) -> dict[str, Model]:
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

    coef, intercept = getattr(estimator, "coef_", None), getattr(estimator, "intercept_", None)
    if coef is None or intercept is None:
        return {}
    if type(estimator) in (Ridge, LinearRegression) and np.ndim(coef) == 1:
        return {"predict": lambda Z: Z @ coef + intercept}
    if type(estimator) is not LogisticRegression or np.ndim(coef) != 2:
        return {}
    classes, W, b = estimator.classes_, coef.T, intercept
    if len(classes) == 2:
        w, b0 = W[:, 0], b[0]

        def binary_proba(Z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            p = 1.0 / (1.0 + np.exp(-(Z @ w + b0)))
            return np.column_stack([1.0 - p, p])

        return {
            "predict": lambda Z: classes[((Z @ w + b0) > 0).astype(int)],
            "predict_proba": binary_proba,
        }

    def softmax(Z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        scores = Z @ W + b
        scores -= scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        result: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
        return result

    return {
        "predict": lambda Z: classes[np.argmax(Z @ W + b, axis=1)],
        "predict_proba": softmax,
    }


def compile_linear(
    estimator: Any, preprocess: Transform, schema: FeatureSchema
) -> dict[str, Model]:
    """numpy versions of a linear model's predict and predict_proba that agree with
    scikit-learn's on probe rows (labels equal, numbers to 1e-9); the others are left out."""
    functions = _linear_functions(estimator)
    if not functions:
        return {}
    Z = preprocess(_probe(schema, PROBE_ROWS))
    agreed: dict[str, Model] = {}
    for method, function in functions.items():
        expected, got = getattr(estimator, method)(Z), function(Z)
        if expected.shape != got.shape:
            continue
        if expected.dtype.kind in "fc":
            same = bool(np.allclose(got, expected, rtol=1e-9, atol=1e-12))
        else:
            same = bool(np.array_equal(got, expected))
        if same:
            agreed[method] = function
    return agreed

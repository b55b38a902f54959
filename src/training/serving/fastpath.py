"""The pipeline's serving form: its preprocessing, and a linear model, as plain numbers for numpy.

Measured on the iris pipeline: ColumnTransformer.transform costs ~400 us per single-row call,
almost all of it input checking and bookkeeping, against ~2 us for the same arithmetic in
numpy; and with scikit-learn 1.9 a LogisticRegression's own predict costs 170-280 us per call
(input checks, array-API dispatch) for a product and an argmax of ~5 us. So the service runs
the preprocessing in numpy, and a linear model's predict and predict_proba too.

Training writes that form beside the pickled pipeline (``SERVING_FILE`` in the model's folder,
JSON: floats round-trip exactly), made by ``describe`` and checked there against the
scikit-learn that fitted the pipeline. A worker whose model's form covers every method it
serves never unpickles the pipeline, so it never imports scikit-learn, SciPy or pandas:
measured, that was more than half of a worker's start-up and ~100 MB of its memory. A model
saved before the form existed gets it described at start-up, with the same checks.

``describe`` only knows the shape ``estimators.make_pipeline_for`` builds: a ColumnTransformer
of a numeric branch (SimpleImputer -> StandardScaler) and a text branch (SimpleImputer ->
OneHotEncoder, dense, fixed categories), then the estimator. For anything else, or if the two
disagree on probe rows, it returns None and the service calls the whole pipeline, so a result
never depends on this module being right; the same holds for the linear models (labels must
be equal on every probe row, numbers equal to 1e-9), method by method.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from training.serving.card import ClassLabel, Method
from training.serving.features import FeatureSchema

Transform = Callable[[npt.NDArray[Any]], npt.NDArray[np.float64]]
Model = Callable[[npt.NDArray[np.float64]], npt.NDArray[Any]]
#: The serving form's file in the model's folder of BentoML's store.
SERVING_FILE = "serving.json"
PROBE_ROWS = 2048


class _Form(BaseModel):
    model_config = ConfigDict(frozen=True)


class TextColumn(_Form):
    column: int
    fill: str
    categories: list[str]


class Preprocessing(_Form):
    """Imputation and scaling of the numeric columns, one-hot encoding of the text ones."""

    numeric: list[int]
    fill: list[float]
    mean: list[float]
    scale: list[float]
    text: list[TextColumn]


class Linear(_Form):
    """A linear model on the preprocessed matrix: ``values`` (ridge, linear regression),
    ``binary`` or ``multiclass`` (logistic regression); ``methods``: those that agreed."""

    kind: Literal["values", "binary", "multiclass"]
    coef: list[list[float]]  # features x outputs
    intercept: list[float]
    classes: list[ClassLabel]
    methods: list[Method]


class ServingForm(_Form):
    preprocessing: Preprocessing
    linear: Linear | None = None

    def covers(self, methods: list[Method]) -> bool:
        """Can these methods be answered without the pipeline?"""
        return self.linear is not None and set(methods) <= set(self.linear.methods)


def read_form(model_folder: Path) -> ServingForm | None:
    """The serving form training stored in the model's folder; None for an older model."""
    try:
        return ServingForm.model_validate_json((model_folder / SERVING_FILE).read_bytes())
    except FileNotFoundError:
        return None


# -- from the form (numpy only: what a serving worker runs) ------------------------------------


def transform_of(form: Preprocessing) -> Transform:
    numeric = form.numeric
    fill, mean, scale = (
        np.asarray(v, dtype=np.float64) for v in (form.fill, form.mean, form.scale)
    )
    text = [(t.column, t.fill, np.asarray(t.categories, dtype=object)) for t in form.text]
    width = len(numeric) + sum(len(categories) for _, _, categories in text)

    def transform(X: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        out = np.zeros((X.shape[0], width), dtype=np.float64)
        if numeric:
            block = X[:, numeric].astype(np.float64)
            block = np.where(np.isnan(block), fill, block)
            out[:, : len(numeric)] = (block - mean) / scale
        offset = len(numeric)
        rows = np.arange(X.shape[0])
        for column, value, categories in text:
            values = X[:, column]
            filled = np.where(values != values, value, values)  # noqa: PLR0124 - NaN != NaN
            out[rows, offset + np.searchsorted(categories, filled)] = 1.0
            offset += len(categories)
        return out

    return transform


def models_of(form: Linear) -> dict[Method, Model]:
    """The linear model's methods that agreed with scikit-learn, in numpy."""
    W = np.asarray(form.coef, dtype=np.float64)
    b = np.asarray(form.intercept, dtype=np.float64)
    classes = np.asarray(form.classes)
    functions: dict[Method, Model]
    if form.kind == "values":
        w, b0 = W[:, 0], b[0]
        functions = {"predict": lambda Z: Z @ w + b0}
    elif form.kind == "binary":
        w, b0 = W[:, 0], b[0]

        def binary_proba(Z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            p = 1.0 / (1.0 + np.exp(-(Z @ w + b0)))
            return np.column_stack([1.0 - p, p])

        functions = {
            "predict": lambda Z: classes[((Z @ w + b0) > 0).astype(int)],
            "predict_proba": binary_proba,
        }
    else:

        def softmax(Z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            scores = Z @ W + b
            scores -= scores.max(axis=1, keepdims=True)
            e = np.exp(scores)
            result: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
            return result

        functions = {
            "predict": lambda Z: classes[np.argmax(Z @ W + b, axis=1)],
            "predict_proba": softmax,
        }
    return {method: functions[method] for method in form.methods}


# -- from the pipeline (scikit-learn: at training, or at start-up for an older model) -----------


def _steps(branch: Any) -> list[Any]:
    return [step for _, step in getattr(branch, "steps", [])]


def _preprocessing(pipeline: Any) -> Preprocessing | None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = pipeline.steps[0][1] if len(getattr(pipeline, "steps", [])) == 2 else None
    if not isinstance(pre, ColumnTransformer) or pre.remainder not in ("drop",):
        return None
    parts: dict[str, Any] = {"numeric": [], "fill": [], "mean": [], "scale": [], "text": []}
    for name, branch, columns in pre.transformers_:
        if name == "remainder":
            continue
        steps = _steps(branch)
        if name == "numbers" and [type(s) for s in steps] == [SimpleImputer, StandardScaler]:
            imputer, scaler = steps
            parts["numeric"] = [int(c) for c in columns]
            parts["fill"] = imputer.statistics_.astype(np.float64).tolist()
            parts["mean"] = (scaler.mean_ if scaler.with_mean else np.zeros(len(columns))).tolist()
            parts["scale"] = (scaler.scale_ if scaler.with_std else np.ones(len(columns))).tolist()
        elif name == "strings" and [type(s) for s in steps] == [SimpleImputer, OneHotEncoder]:
            imputer, encoder = steps
            if getattr(encoder, "sparse_output", True) or encoder.drop is not None:
                return None
            for column, value, categories in zip(
                columns, imputer.statistics_, encoder.categories_, strict=True
            ):
                if not all(isinstance(c, str) for c in [value, *categories]):
                    return None
                parts["text"].append(
                    TextColumn(column=int(column), fill=value, categories=list(categories))
                )
        else:
            return None
    return Preprocessing(**parts)


def _linear(estimator: Any) -> Linear | None:
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

    coef, intercept = getattr(estimator, "coef_", None), getattr(estimator, "intercept_", None)
    if coef is None or intercept is None:
        return None
    if type(estimator) in (Ridge, LinearRegression) and np.ndim(coef) == 1:
        return Linear(
            kind="values",
            coef=np.asarray(coef).reshape(-1, 1).tolist(),
            intercept=[float(intercept)],
            classes=[],
            methods=["predict"],
        )
    if type(estimator) is not LogisticRegression or np.ndim(coef) != 2:
        return None
    classes = estimator.classes_.tolist()
    return Linear(
        kind="binary" if len(classes) == 2 else "multiclass",
        coef=np.asarray(coef).T.tolist(),
        intercept=np.asarray(intercept).tolist(),
        classes=classes,
        methods=["predict", "predict_proba"],
    )


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


def _agrees(expected: npt.NDArray[Any], got: npt.NDArray[Any]) -> bool:
    if expected.shape != got.shape:
        return False
    if expected.dtype.kind in "fc":
        return bool(np.allclose(got, expected, rtol=1e-9, atol=1e-12))
    return bool(expected.tolist() == got.tolist())  # labels, as the answer will carry them


def describe(pipeline: Any, schema: FeatureSchema) -> ServingForm | None:
    """The pipeline's serving form, as stored (read back from its JSON), holding only what
    agreed with scikit-learn on probe rows; None if even the preprocessing is not covered."""
    found = _preprocessing(pipeline)
    if found is None:
        return None
    form = ServingForm.model_validate_json(
        ServingForm(preprocessing=found, linear=_linear(pipeline.steps[-1][1])).model_dump_json()
    )
    probe = _probe(schema, PROBE_ROWS)
    expected = pipeline.steps[0][1].transform(probe)
    Z = transform_of(form.preprocessing)(probe)
    if hasattr(expected, "toarray") or not _agrees(expected, Z):
        return None
    if form.linear is None:
        return form
    estimator = pipeline.steps[-1][1]
    functions = models_of(form.linear)
    agreed = [m for m, f in functions.items() if _agrees(getattr(estimator, m)(Z), f(Z))]
    linear = form.linear.model_copy(update={"methods": agreed}) if agreed else None
    return form.model_copy(update={"linear": linear})

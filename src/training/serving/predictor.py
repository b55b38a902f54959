"""Predictions from the served pipeline: lean calls on validated rows, one or many requests a call.

``answer`` takes the rows of several requests, makes one model call for all of them and hands
each request its own rows back, in order, or its own error: a row the model cannot answer for
fails its request only (the call is made again request by request to find it).

scikit-learn and numpy are imported when a Predictor is made, not with this module: the
`bentoml serve` process that only supervises the workers reads the service's module too, and
needs neither (measured: 27 MB and 0.5 s less for it, with FastAPI gone as well).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from training.serving.card import Method, ModelCard

if TYPE_CHECKING:
    import numpy.typing as npt

    from training.serving.fastpath import ServingForm

Row = dict[str, Any]


def one_thread_per_call() -> None:
    """Numerical libraries in one thread per call: a worker is one CPU's share of the machine.

    Called before scikit-learn loads (OpenMP reads its thread count then). Measured on the
    random forest: from a worker thread, OpenMP's idle threads spun on the other core and a
    1-row call cost 16.5 ms of CPU instead of 9.4.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # what is loaded already (numpy's BLAS)


def settle() -> None:
    """After the model is loaded: what lives as long as the worker leaves the collector's way,
    the young generation is collected less often (measured: p99 from ~100 ms to a few), and
    the heap that loading and probing used goes back to the system (glibc keeps it otherwise)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to give back
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PredictionError(ValueError):
    """Validated rows the model still cannot answer for (say, values far outside training)."""


class Predictor:
    """Predictions for validated rows; one numpy matrix and one model call per batch.

    ``form``: the model's serving form as training stored it (None for a model saved before
    it existed); ``load_pipeline`` unpickles the pipeline, called only when the form does not
    answer every method alone (a forest: the form preprocesses, scikit-learn predicts).
    """

    def __init__(
        self, card: ModelCard, form: ServingForm | None, load_pipeline: Callable[[], Any]
    ) -> None:
        from training.serving.fastpath import describe, models_of, transform_of

        self.schema = card.features
        self.is_classifier = card.task == "classification"
        self.methods: list[Method] = (
            ["predict", "predict_proba"] if self.is_classifier else ["predict"]
        )
        self.pipeline: Any = None
        self.estimator: Any = None
        if form is None or not form.covers(self.methods):
            self.pipeline = load_pipeline()
            self.estimator = self.pipeline.steps[-1][1]
            form = form or describe(self.pipeline, self.schema)
        self.preprocess = transform_of(form.preprocessing) if form is not None else None
        self._numpy = models_of(form.linear) if form is not None and form.linear else {}
        self._class_keys = [str(c) for c in card.classes]
        self._finish = {"predict": self._values, "predict_proba": self._probabilities}

    def _trusting(self) -> contextlib.AbstractContextManager[Any]:
        """Inputs are validated (finite, typed) before they get here, so scikit-learn's own
        per-call checks are skipped: they cost more than the model on a single row."""
        import sklearn

        trusting: contextlib.AbstractContextManager[Any] = sklearn.config_context(
            assume_finite=True, skip_parameter_validation=True
        )
        return trusting

    def _raw(self, method: Method, rows: list[Row]) -> npt.NDArray[Any]:
        X = self.schema.to_matrix(rows)
        in_numpy = self._numpy.get(method)
        if in_numpy is not None:
            assert self.preprocess is not None
            return in_numpy(self.preprocess(X))
        with self._trusting(), warnings.catch_warnings():
            # One filter instead of the process's (eleven under `bentoml serve`): an ensemble's
            # predict copies every filter into each of its trees' calls, which made a 1-row
            # random-forest call 18 ms instead of 9. A warning would repeat per request anyway.
            warnings.resetwarnings()
            warnings.simplefilter("ignore")
            try:
                if self.preprocess is not None:
                    result: npt.NDArray[Any] = getattr(self.estimator, method)(self.preprocess(X))
                else:
                    result = getattr(self.pipeline, method)(X)
            except ValueError as exc:
                raise PredictionError(str(exc)) from exc
        return result

    def answer(self, method: Method, requests: list[list[Row]]) -> list[Any]:
        """Each request's answer (a list) or its PredictionError, from one model call."""
        rows = requests[0] if len(requests) == 1 else [r for req in requests for r in req]
        try:
            raw = self._raw(method, rows)
        except PredictionError as exc:
            if len(requests) == 1:
                return [exc]
            return [self.answer(method, [request])[0] for request in requests]
        answers: list[Any] = []
        start = 0
        finish = self._finish[method]
        for request in requests:
            part = raw[start : start + len(request)]
            start += len(request)
            try:
                answers.append(finish(part))
            except PredictionError as exc:
                answers.append(exc)
        return answers

    def one(self, method: Method, rows: list[Row]) -> list[Any]:
        """One request's answer; raises its PredictionError."""
        [result] = self.answer(method, [rows])
        if isinstance(result, PredictionError):
            raise result
        return list(result)

    def _values(self, raw: npt.NDArray[Any]) -> list[Any]:
        values: list[Any] = raw.tolist()
        if not self.is_classifier and not all(math.isfinite(v) for v in values):
            bad = next(i for i, v in enumerate(values) if not math.isfinite(v))
            raise PredictionError(
                f"row {bad}: the prediction is not a finite number; its values are far "
                "outside what the model was trained on"
            )
        return values

    def _probabilities(self, raw: npt.NDArray[Any]) -> list[dict[str, float]]:
        import numpy as np

        if not np.isfinite(raw).all():
            bad = int(np.argwhere(~np.isfinite(raw))[0][0])
            raise PredictionError(
                f"row {bad}: probabilities are not finite; its values are far outside what "
                "the model was trained on"
            )
        keys = self._class_keys
        return [dict(zip(keys, row, strict=True)) for row in raw.tolist()]

"""The compute half of a run: a checked plan in, a fitted model and its evaluation out.

Nothing here touches the run store or BentoML's store: the same ``fit`` runs in a job process
beside the store (``pipeline.execute`` records as it goes) and on a cluster worker that has
neither (the training service records what comes back). ``Fitted`` is that outcome, one
object: a new artefact of evaluation is a new field here, computed in ``fit`` and written by
``pipeline.record``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from training.errors import UserError
from training.learning import evaluation
from training.learning.columns import DatasetMeta, Task
from training.learning.data import Dataset
from training.learning.estimators import make_estimator, make_pipeline_for, recorded_params
from training.learning.provenance import environment
from training.learning.request import TrainRequest
from training.serving.features import FeatureSchema
from training.store.records import DatasetInfo, Evaluation


@dataclass(frozen=True)
class Checked:
    """A request that holds against its data set's columns: the one rule for CLI and API."""

    target: str
    task: Task
    estimator: Any
    params: dict[str, str]


def check(request: TrainRequest, meta: DatasetMeta) -> Checked:
    """Check a request against a data set's description; raises UserError, records nothing."""
    target = meta.resolve_target(request.target)
    task: Task = request.task or meta.infer_task(target)
    if task == "regression" and target.type == "string":
        raise UserError(
            f"target {target.name!r} holds text; it can only be learnt by classification",
            field="task",
        )
    estimator = make_estimator(task, request.model, request.params, request.seed)
    params = {
        "dataset": meta.name,
        "target": target.name,
        "task": task,
        "model": request.model,
        "cv": str(request.cv),
        "test_size": str(request.test_size),
        "seed": str(request.seed),
        **recorded_params(estimator),
    }
    return Checked(target.name, task, estimator, params)


@dataclass(frozen=True)
class Plan:
    """A request checked against its data: everything a run needs, before the run exists."""

    request: TrainRequest
    experiment: str
    dataset: Dataset
    task: Task
    schema: FeatureSchema
    pipeline: Pipeline
    params: dict[str, str]


def make_plan(request: TrainRequest, dataset: Dataset, experiment: str) -> Plan:
    """Check a request against loaded data; raises UserError, records nothing."""
    checked = check(request, dataset.meta)
    schema = dataset.feature_schema()
    return Plan(
        request=request,
        experiment=experiment,
        dataset=dataset,
        task=checked.task,
        schema=schema,
        pipeline=make_pipeline_for(schema, checked.estimator),
        params=checked.params,
    )


class Progress(Protocol):
    """Who follows a fit: its stages as they start, each cross-validation fold as it ends."""

    def stage(self, name: str, fraction: float) -> None: ...
    def fold(self, number: int, scores: dict[str, float]) -> None: ...


@dataclass(frozen=True)
class Fitted:
    """What a fit produced, whole: the model, what it was fitted on, how it scored, where.

    A worker ships this back to the training service as it is (pickled, checked against the
    service's scikit-learn); the service alone records it.
    """

    model: Pipeline
    task: Task
    algorithm: str
    dataset: DatasetInfo  # its fingerprint, shape, columns and classes
    schema: FeatureSchema
    metrics: dict[str, float]  # on the held-out rows
    folds: list[dict[str, float]] = field(default_factory=list)  # step k: fold k's scores
    cv_summary: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)  # library versions where it ran
    seconds: float = 0.0
    # The held-out artefacts (confusion matrix, ROC, residuals, importances), bounded in size.
    evaluation: Evaluation | None = None

    @property
    def classes(self) -> list[Any]:
        return list(self.dataset.classes or [])


def _matrix(plan: Plan) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """The training matrix, laid out as ``FeatureSchema.to_matrix`` lays out served rows:
    numbers and booleans as float64, text as objects, NaN where a value is missing."""
    frame = plan.dataset.frame
    columns = []
    for feature in plan.schema.features:
        column = frame[feature.name]
        if feature.type == "string":
            columns.append(
                column.astype(object).where(column.notna(), np.nan).to_numpy(dtype=object)
            )
        else:
            columns.append(column.astype(np.float64).to_numpy())
    X = np.column_stack(columns).astype(np.float64 if plan.schema.numeric else object)
    y = frame[plan.dataset.target].to_numpy()
    if plan.task == "regression":
        y = y.astype(np.float64)
    return X, y


def _split(plan: Plan, X: npt.NDArray[Any], y: npt.NDArray[Any]) -> list[Any]:
    stratify = None
    if plan.task == "classification":
        _, counts = np.unique(y, return_counts=True)
        if counts.min() >= 2:
            stratify = y
    try:
        return list(
            train_test_split(
                X,
                y,
                test_size=plan.request.test_size,
                random_state=plan.request.seed,
                stratify=stratify,
            )
        )
    except ValueError as exc:
        raise UserError(f"cannot split the data: {exc}", field="test_size") from exc


def _cross_validate(
    plan: Plan, X: Any, y: Any, classes: list[Any] | None, progress: Progress
) -> list[dict[str, float]]:
    """k folds on the training rows, each fold's scores told as it ends."""
    k = plan.request.cv
    per_fold: list[dict[str, float]] = []
    progress.stage(f"cross-validation fold 1 of {k}", 0.1)
    folds = evaluation.cross_validate(plan.task, plan.pipeline, X, y, k, plan.request.seed, classes)
    for number, scores in enumerate(folds, start=1):
        per_fold.append(scores)
        progress.fold(number, scores)
        if number < k:
            progress.stage(f"cross-validation fold {number + 1} of {k}", 0.1 + 0.6 * number / k)
    return per_fold


def fit(plan: Plan, progress: Progress) -> Fitted:
    """Split, cross-validate, fit and evaluate: the work of a run, recorded by nobody here."""
    started = time.monotonic()
    progress.stage("loading", 0.05)
    X, y = _matrix(plan)
    classes = sorted(np.unique(y).tolist()) if plan.task == "classification" else None
    progress.stage("splitting", 0.1)
    X_train, X_test, y_train, y_test = _split(plan, X, y)
    folds = _cross_validate(plan, X_train, y_train, classes, progress) if plan.request.cv else []
    progress.stage("fitting", 0.7)
    model = plan.pipeline.fit(X_train, y_train)
    progress.stage("evaluating", 0.85)
    metrics = evaluation.score(plan.task, model, X_test, y_test, classes)
    held_out = evaluation.held_out(plan.task, model, X_test, y_test, classes, plan.schema.names)
    return Fitted(
        model=model,
        task=plan.task,
        algorithm=plan.request.model,
        dataset=plan.dataset.info(classes),
        schema=plan.schema,
        metrics=metrics,
        folds=folds,
        cv_summary=evaluation.summarize(folds) if folds else {},
        environment=environment(),
        seconds=round(time.monotonic() - started, 3),
        evaluation=held_out,
    )

"""train -> evaluate -> record -> save: one entry point for the CLI, the workers and `training up`.

The run's record follows MLflow's lifecycle: RUNNING, then FINISHED, FAILED (with its error)
or KILLED (Ctrl-C, SIGTERM, a cancel). Every way out of a running run passes through
``recorded``, the one place a run's failure is written. Only a FINISHED run leaves a model
version, registered in the same transaction that finishes the run; a model saved to BentoML's
store by a run that then fails is deleted again, so nothing is half-promoted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from training.errors import Conflict, Interrupted, ServiceGone, TrainingFailed, UserError
from training.learning import evaluation, modelstore
from training.learning.columns import DatasetMeta, Task
from training.learning.data import Dataset, dataset_meta, load_dataset, model_name_for
from training.learning.estimators import make_estimator, make_pipeline_for, recorded_params
from training.learning.provenance import environment
from training.learning.request import TrainRequest
from training.progress import Reporter
from training.serving.card import ModelMetadata
from training.serving.features import FeatureSchema
from training.settings import Settings
from training.store.records import DatasetInfo, RunStatus
from training.store.runs import RunStore

ERROR_MAX = 4000  # characters of an error kept in the run's record


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


class TrainResult(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    run_id: str
    status: RunStatus
    model_tag: str | None
    metrics: dict[str, float] = Field(default_factory=dict)
    duration_s: float = 0.0


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


def plan(request: TrainRequest, settings: Settings) -> Plan:
    """Load the data and check the request against it; raises UserError, records nothing."""
    dataset = load_dataset(request.dataset, request.target)
    checked = check(request, dataset.meta)
    schema = dataset.feature_schema()
    return Plan(
        request=request,
        experiment=request.experiment or settings.default_experiment,
        dataset=dataset,
        task=checked.task,
        schema=schema,
        pipeline=make_pipeline_for(schema, checked.estimator),
        params=checked.params,
    )


def submit(request: TrainRequest, settings: Settings, store: RunStore) -> str:
    """Check a request without loading its data and record it QUEUED (the web API's path)."""
    meta = dataset_meta(request.dataset)
    checked = check(request, meta)
    return store.create_run(
        experiment=request.experiment or settings.default_experiment,
        model_name=request.model,
        task=checked.task,
        dataset=DatasetInfo(
            name=meta.name, sha256=meta.sha256, rows=meta.rows, target=checked.target
        ),
        params=checked.params,
        tags=dict(request.tags),
        status=RunStatus.QUEUED,
        request=request.model_dump(mode="json"),
    )


# -- how a run ends ----------------------------------------------------------------------------


def ending(exc: BaseException) -> tuple[RunStatus, str]:
    """The status and error a run that stopped on ``exc`` is recorded with."""
    if isinstance(exc, ServiceGone):
        return RunStatus.FAILED, "the training service stopped"
    if isinstance(exc, (KeyboardInterrupt, Interrupted)):
        return RunStatus.KILLED, "interrupted"
    if isinstance(exc, UserError):  # its data changed or vanished, a split impossible, ...
        return RunStatus.FAILED, exc.message
    text = str(exc)
    return RunStatus.FAILED, f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class _Artefact:
    model_tag: str | None = None  # set once a model may exist in BentoML's store


@contextlib.contextmanager
def recorded(store: RunStore, run_id: str) -> Iterator[_Artefact]:
    """Around the work of a RUNNING run: whatever stops it is recorded, and its model taken back.

    An interrupt is re-raised as it is (the CLI exits 130); any other failure becomes
    ``TrainingFailed`` naming the run and its recorded error.
    """
    artefact = _Artefact()
    try:
        yield artefact
    except BaseException as exc:
        status, error = ending(exc)
        _abandon(store, run_id, status, error, artefact.model_tag)
        if isinstance(exc, Exception):
            raise TrainingFailed(run_id, status, error) from exc
        raise


def _abandon(
    store: RunStore, run_id: str, status: RunStatus, error: str, model_tag: str | None
) -> None:
    """Record a run that did not finish and take back its model, unless it did finish after all
    (an interrupt that lands between the commit and the return)."""
    if store.get_run(run_id).status == RunStatus.FINISHED:
        return
    if model_tag is not None:
        modelstore.delete(model_tag)
    # Ended meanwhile by someone else (a cancel, a restart): keep their record, and do not
    # let this Conflict hide the exception being handled.
    with contextlib.suppress(Conflict):
        store.finish(run_id, status, error=error[:ERROR_MAX])


# -- the work ----------------------------------------------------------------------------------


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


def model_tag_for(plan: Plan, run_id: str) -> str:
    """The model's tag, known before it is saved: its version is the run id, so a model and
    its run name each other, and an interrupted save can always be found and taken back."""
    return f"{model_name_for(plan.dataset.name, plan.request.model)}:{run_id}"


@dataclass(frozen=True)
class _Run:
    """A run in progress: its record and whoever watches it."""

    plan: Plan
    store: RunStore
    run_id: str
    report: Reporter

    def stage(self, name: str, fraction: float) -> None:
        self.store.set_progress(self.run_id, name, fraction)
        self.report(name, fraction)

    def log(self, metrics: dict[str, float], step: int = 0, prefix: str = "") -> None:
        self.store.log_metrics(self.run_id, [(prefix + k, v, step) for k, v in metrics.items()])

    def cross_validate(self, X: Any, y: Any, classes: list[Any] | None) -> None:
        """k folds on the training rows: each fold's scores as a step, then their summary."""
        k = self.plan.request.cv
        per_fold: list[dict[str, float]] = []
        self.stage(f"cross-validation fold 1 of {k}", 0.1)
        folds = evaluation.cross_validate(
            self.plan.task, self.plan.pipeline, X, y, k, self.plan.request.seed, classes
        )
        for number, scores in enumerate(folds, start=1):
            per_fold.append(scores)
            self.log(scores, step=number, prefix="cv_fold_")
            if number < k:
                self.stage(f"cross-validation fold {number + 1} of {k}", 0.1 + 0.6 * number / k)
        self.log(evaluation.summarize(per_fold))

    def save(self, tag: str, model: Pipeline, metrics: dict[str, float]) -> None:
        plan = self.plan
        classes = [c.item() if hasattr(c, "item") else c for c in getattr(model, "classes_", [])]
        metadata = ModelMetadata(
            run_id=self.run_id,
            experiment=plan.experiment,
            task=plan.task,
            algorithm=plan.request.model,
            target=plan.dataset.target,
            dataset_sha256=plan.dataset.sha256,
            features=plan.schema,
            classes=classes,
            metrics=metrics,
        )
        labels = {
            "run_id": self.run_id,
            "experiment": plan.experiment,
            "task": plan.task,
            "dataset": plan.dataset.name[-60:],
        }
        modelstore.save(tag, model, metadata, labels)


def execute(
    plan: Plan, store: RunStore, report: Reporter, run_id: str | None = None
) -> TrainResult:
    """Run a checked plan, recording every step; ``run_id``: a run already RUNNING here."""
    started = time.monotonic()
    if run_id is None:
        run_id = store.create_run(
            experiment=plan.experiment,
            model_name=plan.request.model,
            task=plan.task,
            dataset=plan.dataset.info(),
            params=plan.params,
            tags=dict(plan.request.tags),
            environment=environment(),
        )
    run = _Run(plan, store, run_id, report)
    with recorded(store, run_id) as artefact:
        run.stage("loading", 0.05)
        X, y = _matrix(plan)
        classes = sorted(np.unique(y).tolist()) if plan.task == "classification" else None
        store.set_dataset(run_id, plan.dataset.info(classes))
        run.stage("splitting", 0.1)
        X_train, X_test, y_train, y_test = _split(plan, X, y)
        if plan.request.cv:
            run.cross_validate(X_train, y_train, classes)
        run.stage("fitting", 0.7)
        model = plan.pipeline.fit(X_train, y_train)
        run.stage("evaluating", 0.85)
        metrics = evaluation.score(plan.task, model, X_test, y_test, classes)
        held_out = evaluation.held_out(plan.task, model, X_test, y_test, classes, plan.schema.names)
        run.log(metrics)
        run.stage("saving", 0.9)
        artefact.model_tag = model_tag = model_tag_for(plan, run_id)
        run.save(model_tag, model, metrics)
        store.finish(
            run_id,
            RunStatus.FINISHED,
            model_tag=model_tag,
            model_name=model_tag.partition(":")[0],
            evaluation=held_out,
        )
    report("finished", 1.0)
    duration = round(time.monotonic() - started, 3)
    return TrainResult(
        run_id=run_id,
        status=RunStatus.FINISHED,
        model_tag=model_tag,
        metrics=metrics,
        duration_s=duration,
    )


def train(
    request: TrainRequest, settings: Settings, store: RunStore, report: Reporter
) -> TrainResult:
    return execute(plan(request, settings), store, report)

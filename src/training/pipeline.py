"""train -> evaluate -> record -> save: one function per step, one entry point for CLI and API.

The run's record follows MLflow's lifecycle: RUNNING, then FINISHED, FAILED (with its error)
or KILLED (Ctrl-C, SIGTERM, a cancel). Only a FINISHED run leaves a model version, registered
in the same transaction that finishes the run; a model saved to BentoML's store by a run that
then fails is deleted again, so nothing is half-promoted.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from training import evaluation, modelstore
from training.config import Settings
from training.data import Dataset, DatasetMeta, Task, dataset_meta, load_dataset, model_name_for
from training.entities import DatasetInfo
from training.errors import Conflict, Interrupted, TrainingFailed, UserError
from training.estimators import make_estimator, make_pipeline_for, recorded_params
from training.features import FeatureSchema
from training.progress import Reporter
from training.provenance import environment
from training.request import TrainRequest
from training.store import RunStore


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


@dataclass
class TrainResult:
    run_id: str
    status: str
    model_tag: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "model_tag": self.model_tag,
            "metrics": self.metrics,
            "duration_s": round(self.duration_s, 3),
        }


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
        status="QUEUED",
        request=request.model_dump(mode="json"),
    )


def run_queued(run_id: str, settings: Settings, store: RunStore, report: Reporter) -> TrainResult:
    """Run a QUEUED run in this process (a job worker); its request is in its record."""
    run = store.get_run(run_id)
    if run.status != "QUEUED" or run.request is None:
        raise Conflict(f"run {run_id} is {run.status}, not a queued run")
    store.start_queued(run_id, environment())  # RUNNING from here: every way out is recorded
    store.set_progress(run_id, "loading", 0.02)
    report("loading", 0.02)
    try:
        checked_plan = plan(TrainRequest.model_validate(run.request), settings)
    except UserError as exc:  # its data changed or vanished while it waited
        store.finish(run_id, "FAILED", error=exc.message)
        raise TrainingFailed(run_id, "FAILED", exc.message) from exc
    except (KeyboardInterrupt, Interrupted):
        store.finish(run_id, "KILLED", error="interrupted")
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        store.finish(run_id, "FAILED", error=error[:4000])
        raise TrainingFailed(run_id, "FAILED", error) from exc
    return execute(checked_plan, store, report, run_id)


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


def _save_model(plan: Plan, tag: str, model: Pipeline, metrics: dict[str, float]) -> None:
    import bentoml

    run_id = tag.partition(":")[2]
    classes = [c.item() if hasattr(c, "item") else c for c in getattr(model, "classes_", [])]
    with modelstore.changing():
        bentoml.sklearn.save_model(
            tag,
            model,
            labels={
                "run_id": run_id,
                "experiment": plan.experiment,
                "task": plan.task,
                "dataset": plan.dataset.name[-60:],
            },
            metadata={
                "run_id": run_id,
                "experiment": plan.experiment,
                "task": plan.task,
                "algorithm": plan.request.model,
                "target": plan.dataset.target,
                "dataset_sha256": plan.dataset.sha256,
                "features": plan.schema.to_json(),
                "classes": classes,
                "metrics": metrics,
            },
            signatures={"predict": {"batchable": False}, "predict_proba": {"batchable": False}},
        )


def _delete_model(tag: str | None) -> None:
    if tag is None:
        return
    import bentoml

    # Best effort: the run's own failure is what gets reported.
    with contextlib.suppress(Exception), modelstore.changing():
        bentoml.models.delete(tag)


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
    model_tag: str | None = None
    finished = False
    status, error = "FAILED", "unknown error"

    def stage(name: str, fraction: float) -> None:
        store.set_progress(run_id, name, fraction)
        report(name, fraction)

    try:
        stage("loading", 0.05)
        X, y = _matrix(plan)
        classes = sorted(np.unique(y).tolist()) if plan.task == "classification" else None
        store.set_dataset(run_id, plan.dataset.info(classes))
        stage("splitting", 0.1)
        X_train, X_test, y_train, y_test = _split(plan, X, y)
        k = plan.request.cv
        if k:
            per_fold: list[dict[str, float]] = []
            stage(f"cross-validation fold 1 of {k}", 0.1)
            folds = evaluation.cross_validate(
                plan.task, plan.pipeline, X_train, y_train, k, plan.request.seed, classes
            )
            for number, scores in enumerate(folds, start=1):
                per_fold.append(scores)
                store.log_metrics(
                    run_id, [(f"cv_fold_{key}", v, number) for key, v in scores.items()]
                )
                if number < k:
                    stage(f"cross-validation fold {number + 1} of {k}", 0.1 + 0.6 * number / k)
            store.log_metrics(
                run_id, [(key, v, 0) for key, v in evaluation.summarize(per_fold).items()]
            )
        stage("fitting", 0.7)
        model = plan.pipeline.fit(X_train, y_train)
        stage("evaluating", 0.85)
        metrics = evaluation.score(plan.task, model, X_test, y_test, classes)
        store.log_metrics(run_id, [(key, v, 0) for key, v in metrics.items()])
        stage("saving", 0.9)
        model_tag = model_tag_for(plan, run_id)
        _save_model(plan, model_tag, model, metrics)
        store.finish(
            run_id,
            "FINISHED",
            model_tag=model_tag,
            model_name=model_tag.partition(":")[0],
        )
        finished = True
        report("finished", 1.0)
        return TrainResult(run_id, "FINISHED", model_tag, metrics, time.monotonic() - started)
    except (KeyboardInterrupt, Interrupted):
        status, error = "KILLED", "interrupted"
        raise
    except Exception as exc:
        status, error = "FAILED", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise TrainingFailed(run_id, status, error) from exc
    finally:
        if not finished:
            _abandon(store, run_id, status, error, model_tag)


def _abandon(store: RunStore, run_id: str, status: str, error: str, model_tag: str | None) -> None:
    """Record a run that did not finish and take back its model, unless it did finish after all
    (an interrupt that lands between the commit and the return)."""
    if store.get_run(run_id).status == "FINISHED":
        return
    _delete_model(model_tag)
    # Ended meanwhile by someone else (a cancel, a restart): keep their record, and do not
    # let this Conflict hide the exception being handled.
    with contextlib.suppress(Conflict):
        store.finish(run_id, status, error=error[:4000])


def train(
    request: TrainRequest, settings: Settings, store: RunStore, report: Reporter
) -> TrainResult:
    return execute(plan(request, settings), store, report)

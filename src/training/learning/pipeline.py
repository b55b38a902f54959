"""train -> evaluate -> record -> save: one entry point for the CLI, the workers and `training up`.

The compute half (split, cross-validate, fit, evaluate) is ``fitting.fit``; this module is the
recording half around it. The run's record follows MLflow's lifecycle: RUNNING, then FINISHED,
FAILED (with its error) or KILLED (Ctrl-C, SIGTERM, a cancel). Every way out of a running run
passes through ``recorded``, the one place a run's failure is written; ``record`` writes what a
fit produced, wherever it ran (here, or on a cluster worker). Only a FINISHED run leaves a model
version, registered in the same transaction that finishes the run; a model saved to BentoML's
store by a run that then fails is deleted again, so nothing is half-promoted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from training.errors import Conflict, Interrupted, ServiceGone, TrainingFailed, UserError
from training.learning import modelstore
from training.learning.data import dataset_meta, load_dataset, model_name_for
from training.learning.fitting import Fitted, Plan, check, fit, make_plan
from training.learning.provenance import environment
from training.learning.request import TrainRequest
from training.progress import Reporter
from training.serving.card import ModelMetadata
from training.settings import Settings
from training.store.records import DatasetInfo, NewRun, RunStatus
from training.store.runs import RunStore

ERROR_MAX = 4000  # characters of an error kept in the run's record


class TrainResult(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    run_id: str
    status: RunStatus
    model_tag: str | None
    metrics: dict[str, float] = Field(default_factory=dict)
    duration_s: float = 0.0


def plan(request: TrainRequest, settings: Settings) -> Plan:
    """Load the data and check the request against it; raises UserError, records nothing."""
    dataset = load_dataset(request.dataset, request.target)
    return make_plan(request, dataset, request.experiment or settings.default_experiment)


def queued_run(request: TrainRequest, settings: Settings, sweep: str | None = None) -> NewRun:
    """A request checked without loading its data, as the QUEUED run that records it."""
    meta = dataset_meta(request.dataset)
    checked = check(request, meta)
    return NewRun(
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
        sweep=sweep,
    )


def submit(request: TrainRequest, settings: Settings, store: RunStore) -> str:
    """Check a request without loading its data and record it QUEUED (the web API's path)."""
    return store.create_run(**dict(queued_run(request, settings)))


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
        if isinstance(exc, TrainingFailed) and exc.run_id == run_id:
            raise  # recorded already, by a ``recorded`` inside this one
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


# -- the record ------------------------------------------------------------------------------


def model_tag_for(fitted: Fitted, run_id: str) -> str:
    """The model's tag, known before it is saved: its version is the run id, so a model and
    its run name each other, and an interrupted save can always be found and taken back."""
    return f"{model_name_for(fitted.dataset.name, fitted.algorithm)}:{run_id}"


@dataclass(frozen=True)
class StoreProgress:
    """Progress written to the run store as it happens (and told to whoever watches)."""

    store: RunStore
    run_id: str
    report: Reporter

    def stage(self, name: str, fraction: float) -> None:
        self.store.set_progress(self.run_id, name, fraction)
        self.report(name, fraction)

    def fold(self, number: int, scores: dict[str, float]) -> None:
        self.store.log_metrics(
            self.run_id, [(f"cv_fold_{k}", v, number) for k, v in scores.items()]
        )


def _save(fitted: Fitted, tag: str, run_id: str, experiment: str) -> None:
    metadata = ModelMetadata(
        run_id=run_id,
        experiment=experiment,
        task=fitted.task,
        algorithm=fitted.algorithm,
        target=fitted.dataset.target or "",
        dataset_sha256=fitted.dataset.sha256 or "",
        features=fitted.schema,
        classes=[c.item() if hasattr(c, "item") else c for c in fitted.model.classes_]
        if hasattr(fitted.model, "classes_")
        else [],
        metrics=fitted.metrics,
    )
    labels = {
        "run_id": run_id,
        "experiment": experiment,
        "task": fitted.task,
        "dataset": fitted.dataset.name[-60:],
    }
    modelstore.save(tag, fitted.model, metadata, labels)


def record(store: RunStore, run_id: str, fitted: Fitted, artefact: _Artefact | None = None) -> str:
    """Write what a fit produced and finish its run with its model: the data set it saw, every
    metric with its steps (idempotent: folds told live are written again as they were), the
    model in BentoML's store. Call it inside ``recorded``; returns the model's tag."""
    run = store.get_run(run_id)
    store.set_dataset(run_id, fitted.dataset)
    points = [
        (f"cv_fold_{key}", value, step)
        for step, scores in enumerate(fitted.folds, start=1)
        for key, value in scores.items()
    ]
    points += [(k, v, 0) for k, v in {**fitted.cv_summary, **fitted.metrics}.items()]
    store.log_metrics(run_id, points)
    store.set_progress(run_id, "saving", 0.9)
    tag = model_tag_for(fitted, run_id)
    if artefact is not None:
        artefact.model_tag = tag
    _save(fitted, tag, run_id, run.experiment)
    store.finish(
        run_id,
        RunStatus.FINISHED,
        model_tag=tag,
        model_name=tag.partition(":")[0],
        evaluation=fitted.evaluation,
    )
    return tag


def execute(
    plan: Plan, store: RunStore, report: Reporter, run_id: str | None = None
) -> TrainResult:
    """Run a checked plan here, recording every step; ``run_id``: a run already RUNNING here."""
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
    with recorded(store, run_id) as artefact:
        fitted = fit(plan, StoreProgress(store, run_id, report))
        report("saving", 0.9)
        model_tag = record(store, run_id, fitted, artefact)
    report("finished", 1.0)
    return TrainResult(
        run_id=run_id,
        status=RunStatus.FINISHED,
        model_tag=model_tag,
        metrics=fitted.metrics,
        duration_s=round(time.monotonic() - started, 3),
    )


def train(
    request: TrainRequest, settings: Settings, store: RunStore, report: Reporter
) -> TrainResult:
    return execute(plan(request, settings), store, report)

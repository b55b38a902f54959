"""What a valid sweep is, and the runs it stands for: a grid, or random samples over ranges.

A sweep request is a training request (the same fields and rules) plus what to search:
``grid`` (every combination of the listed values) or ``samples`` draws over ``ranges`` (and
over the grid's lists, if both are given). A range is text, ``LOW..HIGH``: whole numbers give
whole numbers (both ends included), otherwise a uniform float; ``log:LOW..HIGH`` draws
log-uniformly (LOW > 0). Draws are reproducible from the request's ``seed``. Each run is
checked as a training request alone would be, before anything is recorded.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from training.errors import UserError
from training.learning.columns import Task
from training.learning.data import dataset_meta
from training.learning.evaluation import CLASSIFICATION_METRICS, REGRESSION_METRICS
from training.learning.fitting import check
from training.learning.pipeline import queued_run
from training.learning.request import KEY_MAX, TrainRequest
from training.settings import Settings
from training.store.records import NewRun
from training.store.sweeps import NewSweep

#: Higher is better for these; lower for the rest (losses and errors).
HIGHER_IS_BETTER = {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "r2"}
DEFAULT_METRIC: dict[Task, str] = {"classification": "accuracy", "regression": "rmse"}
VALUES_MAX = 100  # values of one grid parameter
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_RANGE = re.compile(rf"(?P<log>log:)?(?P<low>{_NUMBER})\.\.(?P<high>{_NUMBER})")


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    whole: bool  # both ends written as whole numbers: draw integers
    log: bool

    def draw(self, rng: random.Random) -> int | float:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        if self.whole:
            return min(int(self.high), max(int(self.low), round(value)))
        return float(f"{value:.6g}")


def parse_range(text: str) -> Range:
    """``LOW..HIGH`` or ``log:LOW..HIGH``; ValueError saying what is expected."""
    match = _RANGE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected LOW..HIGH or log:LOW..HIGH (e.g. 50..300), got {text!r}")
    low_text, high_text = match["low"], match["high"]
    low, high = float(low_text), float(high_text)
    if not low < high:
        raise ValueError(f"the low end must be below the high end, got {text!r}")
    if match["log"] and low <= 0:
        raise ValueError(f"a log range needs a low end above 0, got {text!r}")
    whole = all(re.fullmatch(r"[+-]?\d+", t) for t in (low_text, high_text))
    return Range(low, high, whole, bool(match["log"]))


class SweepRequest(TrainRequest):
    """A training request with what to search; ``params`` are fixed for every run."""

    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Parameter -> values: every combination is a run (or, with samples, "
        "each sample picks one value of each).",
    )
    ranges: dict[str, str] = Field(
        default_factory=dict,
        description="Parameter -> LOW..HIGH or log:LOW..HIGH, drawn per sample (needs samples).",
    )
    samples: int | None = Field(
        default=None, ge=1, description="Random search: this many runs drawn from grid and ranges."
    )
    metric: str | None = Field(
        default=None,
        description="The metric that picks the best run: accuracy (classification) or rmse "
        "(regression) by default; cv_<metric>_mean too when cv is on.",
    )

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if not key or len(key) > KEY_MAX:
                raise ValueError(f"parameter names must be 1 to {KEY_MAX} characters")
            if not 1 <= len(values) <= VALUES_MAX:
                raise ValueError(f"{key}: give 1 to {VALUES_MAX} values, got {len(values)}")
        return value

    @field_validator("ranges")
    @classmethod
    def _range_syntax(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            try:
                parse_range(text)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from exc
        return value

    def check_search(self) -> None:
        """The rules across fields, as a UserError naming the field at fault."""
        if not self.grid and not self.ranges:
            raise UserError(
                "grid: give at least one parameter to search (grid or ranges)", field="grid"
            )
        if self.ranges and self.samples is None:
            raise UserError(
                "samples: ranges are drawn from: give samples (random search)", field="samples"
            )
        for key in [*self.grid, *self.ranges]:
            if key in self.params:
                where = "grid" if key in self.grid else "ranges"
                raise UserError(f"{where}: {key!r} is also a fixed parameter (params)", field=where)
        both = sorted(set(self.grid) & set(self.ranges))
        if both:
            raise UserError(f"ranges: {both[0]!r} is in grid too", field="ranges")

    def combinations(self, max_runs: int) -> list[dict[str, Any]]:
        """The parameters of each run, in order: the grid's product, or the samples drawn."""
        if self.samples is None:
            total = math.prod(len(values) for values in self.grid.values())
            if total > max_runs:
                raise UserError(
                    f"grid: {total} combinations, more than {max_runs} runs "
                    "(TRAINING_SWEEP_MAX_RUNS); use samples for a random search",
                    field="grid",
                )
            keys = list(self.grid)
            return [
                dict(zip(keys, combo, strict=True))
                for combo in itertools.product(*self.grid.values())
            ]
        if self.samples > max_runs:
            raise UserError(
                f"samples: {self.samples} runs, more than {max_runs} (TRAINING_SWEEP_MAX_RUNS)",
                field="samples",
            )
        rng = random.Random(self.seed)
        ranges = {key: parse_range(text) for key, text in self.ranges.items()}
        return [
            {key: rng.choice(values) for key, values in self.grid.items()}
            | {key: spec.draw(rng) for key, spec in ranges.items()}
            for _ in range(self.samples)
        ]

    def run_request(self, values: dict[str, Any]) -> TrainRequest:
        own = set(SweepRequest.model_fields) - set(TrainRequest.model_fields)
        fields = {name: getattr(self, name) for name in type(self).model_fields if name not in own}
        return TrainRequest.model_validate({**fields, "params": {**self.params, **values}})


@dataclass(frozen=True)
class SweepPlan:
    """A sweep checked against its data set: the runs to record, and how to rank them."""

    request: SweepRequest
    experiment: str
    task: Task
    metric: str
    goal: str  # "max" or "min"
    runs: list[NewRun]

    def recorded_as(self, requested_by: str | None, owner: str | None = None) -> NewSweep:
        """The sweep's record, its runs with it; ``owner``: the process that runs them (a
        `training sweep`), none for the training service's queue."""
        return NewSweep(
            experiment=self.experiment,
            dataset=self.request.dataset,
            model=self.request.model,
            metric=self.metric,
            goal=self.goal,
            request=self.request.model_dump(mode="json"),
            runs=[run.model_copy(update={"owner": owner}) for run in self.runs],
            requested_by=requested_by,
        )


def _metric(request: SweepRequest, task: Task) -> tuple[str, str]:
    metric = request.metric or DEFAULT_METRIC[task]
    names = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    allowed = [*names, *(f"cv_{name}_mean" for name in names if request.cv)]
    if metric not in allowed:
        raise UserError(
            f"metric: {metric!r} is not a {task} metric here; choose one of {', '.join(allowed)}",
            field="metric",
        )
    base = metric.removeprefix("cv_").removesuffix("_mean")
    return metric, "max" if base in HIGHER_IS_BETTER else "min"


def plan_sweep(request: SweepRequest, settings: Settings, max_runs: int) -> SweepPlan:
    """Every run of a sweep, each checked as its own training request; raises UserError
    naming the field at fault, records nothing."""
    request.check_search()
    meta = dataset_meta(request.dataset)
    field = "grid" if request.grid and not request.ranges else "ranges"
    runs: list[NewRun] = []
    task: Task | None = None
    for values in request.combinations(max_runs):
        run_request = request.run_request(values)
        try:
            task = task or check(run_request, meta).task
            runs.append(queued_run(run_request, settings))
        except UserError as exc:
            if exc.field != "params":
                raise
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
            raise UserError(f"{field}: the run with {shown}: {exc.message}", field=field) from exc
    assert task is not None  # a sweep has at least one run
    metric, goal = _metric(request, task)
    experiment = request.experiment or settings.default_experiment
    return SweepPlan(request, experiment, task, metric, goal, runs)

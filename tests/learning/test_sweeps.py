"""What a sweep request is and the runs it stands for, in process (no run is recorded here)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from training.errors import UserError
from training.learning.sweeps import SweepRequest, parse_range, plan_sweep
from training.settings import Settings

BASE = {"dataset": "iris", "model": "random_forest", "cv": 0}


def sweep(**fields: Any) -> SweepRequest:
    return SweepRequest.model_validate({**BASE, **fields})


def test_a_grid_is_every_combination_in_order_with_the_fixed_params() -> None:
    plan = plan_sweep(
        sweep(
            grid={"n_estimators": [5, 10], "max_depth": [2, 4, None]},
            params={"min_samples_leaf": 2},
        ),
        Settings(),
        max_runs=50,
    )
    combos = [(r.params["n_estimators"], r.params["max_depth"]) for r in plan.runs]
    assert combos == [(n, d) for n in ("5", "10") for d in ("2", "4", "null")]
    assert {r.params["min_samples_leaf"] for r in plan.runs} == {"2"}
    assert all(r.status == "QUEUED" and r.request for r in plan.runs)
    assert (plan.task, plan.metric, plan.goal) == ("classification", "accuracy", "max")


def test_a_random_search_draws_reproducibly_within_its_ranges() -> None:
    request = sweep(
        ranges={"n_estimators": "10..50", "min_weight_fraction_leaf": "0..0.2"},
        grid={"criterion": ["gini", "entropy"]},
        samples=20,
        seed=3,
    )
    first = request.combinations(100)
    assert first == request.combinations(100) and len(first) == 20
    assert all(isinstance(c["n_estimators"], int) and 10 <= c["n_estimators"] <= 50 for c in first)
    assert all(0 <= c["min_weight_fraction_leaf"] <= 0.2 for c in first)
    assert {c["criterion"] for c in first} == {"gini", "entropy"}
    assert sweep(ranges={"n_estimators": "10..50"}, samples=20, seed=4).combinations(100) != [
        {"n_estimators": c["n_estimators"]} for c in first
    ]
    logs = [parse_range("log:0.001..10").draw(__import__("random").Random(s)) for s in range(200)]
    assert min(logs) < 0.01 and max(logs) > 1 and all(0.001 <= v <= 10 for v in logs)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("3-9", "expected LOW..HIGH"),
        ("9..3", "low end must be below"),
        ("log:0..1", "above 0"),
        ("a..b", "expected LOW..HIGH"),
    ],
)
def test_a_range_that_cannot_be_read_is_refused_naming_it(text: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        sweep(ranges={"max_depth": text}, samples=2)
    error = info.value.errors()[0]
    assert error["loc"] == ("ranges",) and reason in error["msg"] and "max_depth" in error["msg"]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({}, "grid", "at least one parameter"),
        ({"ranges": {"max_depth": "2..8"}}, "samples", "give samples"),
        ({"grid": {"max_depth": [2]}, "params": {"max_depth": 3}}, "grid", "also a fixed"),
        (
            {"grid": {"max_depth": [2]}, "ranges": {"max_depth": "2..3"}, "samples": 2},
            "ranges",
            "in grid too",
        ),
        (
            {"grid": {"max_depth": list(range(1, 9)), "n_estimators": list(range(1, 9))}},
            "grid",
            "64 combinations",
        ),
        ({"ranges": {"max_depth": "2..8"}, "samples": 51}, "samples", "more than 50"),
        ({"grid": {"max_depth": [2, -1]}}, "grid", "max_depth=-1"),
        ({"grid": {"depth": [2]}}, "grid", "unknown parameter 'depth'"),
        ({"grid": {"max_depth": [2]}, "metric": "rmse"}, "metric", "not a classification metric"),
        (
            {"grid": {"max_depth": [2]}, "metric": "cv_accuracy_mean"},
            "metric",
            "not a classification",
        ),
    ],
)
def test_each_bad_sweep_is_a_user_error_naming_its_field(
    fields: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(UserError) as info:
        plan_sweep(sweep(**fields), Settings(), max_runs=50)
    assert info.value.field == field and message in info.value.message, info.value.message


def test_a_regression_sweep_ranks_by_rmse_lowest_first_and_cv_metrics_are_allowed() -> None:
    plan = plan_sweep(
        SweepRequest(dataset="diabetes", model="ridge", grid={"alpha": [0.1, 1.0]}, cv=2),
        Settings(),
        max_runs=10,
    )
    assert (plan.task, plan.metric, plan.goal) == ("regression", "rmse", "min")
    cv = SweepRequest(
        dataset="diabetes", model="ridge", grid={"alpha": [1]}, cv=2, metric="cv_r2_mean"
    )
    assert plan_sweep(cv, Settings(), max_runs=10).goal == "max"

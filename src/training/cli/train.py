"""`training train`: one run from the command line, with a progress display."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from training.cli.app import json_flag
from training.cli.output import pairs, print_json, stdout
from training.cli.progress import progress_display
from training.config import get_settings
from training.errors import UserError

if TYPE_CHECKING:
    from training.pipeline import TrainResult


def register(commands: Any) -> None:
    from training.data import SHIPPED

    train = commands.add_parser("train", help="train a model, record the run, save the model")
    train.add_argument(
        "--dataset", help=f"{' | '.join(SHIPPED)} | an uploaded dataset id (ds_...) | PATH.csv"
    )
    train.add_argument("--target", help="target column (default: 'target', else the last column)")
    train.add_argument("--model", help="algorithm, e.g. logistic_regression, random_forest, ridge")
    train.add_argument(
        "--task", choices=("classification", "regression"), help="force the task type"
    )
    train.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hyper-parameter (repeatable)",
    )
    train.add_argument("--experiment", help="experiment name (default: DEFAULT_EXPERIMENT)")
    train.add_argument(
        "--cv", type=int, default=5, help="cross-validation folds, 0 for none (default 5)"
    )
    train.add_argument(
        "--test-size", type=float, default=0.2, help="held-out share of rows (default 0.2)"
    )
    train.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    train.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="run tag (repeatable)"
    )
    train.add_argument(
        "--run-id",
        help="run a QUEUED run from its recorded request (what the training service's workers do)",
    )
    json_flag(train)
    train.set_defaults(handler=run_train)


def validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "request"
    return f"{where}: {first['msg']}"


def _tags(pairs_: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs_:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--tag expects key=value, got {pair!r}")
        tags[key] = value
    return tags


def run_train(args: argparse.Namespace) -> int:
    from training.estimators import parse_param_pairs
    from training.jobs import WORKER_ENV, limit_this_worker
    from training.pipeline import execute, plan, run_queued
    from training.request import TrainRequest
    from training.revision import checked_database
    from training.store import RunStore

    settings = get_settings()
    if args.run_id:
        limits = os.environ.get(WORKER_ENV)
        if limits:  # started by the training service's executor
            memory_mb, parent = (int(part) for part in limits.split(":"))
            limit_this_worker(memory_mb, parent)
        if args.dataset or args.model:
            raise UserError("--run-id runs a recorded request: give no --dataset or --model")
        store = RunStore(checked_database(settings))
        with progress_display(f"run {args.run_id[:12]}") as report:
            result = run_queued(args.run_id, settings, store, report)
        _print_result(result, args.json)
        return 0
    if not args.dataset or not args.model:
        raise UserError("train needs --dataset and --model (or --run-id)")
    try:
        request = TrainRequest(
            dataset=args.dataset,
            target=args.target,
            model=args.model,
            task=args.task,
            params=parse_param_pairs(args.param),
            experiment=args.experiment,
            cv=args.cv,
            test_size=args.test_size,
            seed=args.seed,
            tags=_tags(args.tag),
        )
    except ValidationError as exc:
        raise UserError(validation_message(exc)) from exc
    store = RunStore(checked_database(settings))
    checked = plan(request, settings)
    with progress_display(f"{checked.dataset.name} / {request.model}") as report:
        result = execute(checked, store, report)
    _print_result(result, args.json)
    return 0


def _print_result(result: TrainResult, as_json: bool) -> None:
    if as_json:
        print_json(result.to_json())
        return
    stdout.print(
        f"run {result.run_id} {result.status} in {result.duration_s:.1f}s; model {result.model_tag}"
    )
    pairs("Held-out metrics", dict(result.metrics))

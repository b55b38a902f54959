"""`training train`: one run from the command line, with a progress display."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from training.cli.output import json_flag, pairs, print_json, stdout
from training.cli.progress import progress_display
from training.errors import UserError
from training.settings import Settings, load

if TYPE_CHECKING:
    from training.learning.pipeline import TrainResult
    from training.learning.request import TrainRequest


def request_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of a training request, shared by `train` and `sweep`."""
    from training.learning.data import SHIPPED

    parser.add_argument(
        "--dataset", help=f"{' | '.join(SHIPPED)} | an uploaded dataset id (ds_...) | PATH.csv"
    )
    parser.add_argument("--target", help="target column (default: 'target', else the last column)")
    parser.add_argument("--model", help="algorithm, e.g. logistic_regression, random_forest, ridge")
    parser.add_argument(
        "--task", choices=("classification", "regression"), help="force the task type"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hyper-parameter (repeatable)",
    )
    parser.add_argument("--experiment", help="experiment name (default: DEFAULT_EXPERIMENT)")
    parser.add_argument(
        "--cv", type=int, default=5, help="cross-validation folds, 0 for none (default 5)"
    )
    parser.add_argument(
        "--test-size", type=float, default=0.2, help="held-out share of rows (default 0.2)"
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="run tag (repeatable)"
    )


def request_fields(args: argparse.Namespace) -> dict[str, Any]:
    """A training request's fields from the flags of ``request_flags``."""
    from training.learning.estimators import parse_param_pairs

    return {
        "dataset": args.dataset,
        "target": args.target,
        "model": args.model,
        "task": args.task,
        "params": parse_param_pairs(args.param),
        "experiment": args.experiment,
        "cv": args.cv,
        "test_size": args.test_size,
        "seed": args.seed,
        "tags": tag_pairs(args.tag),
    }


def register(commands: Any) -> None:
    train = commands.add_parser("train", help="train a model, record the run, save the model")
    request_flags(train)
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


def tag_pairs(pairs_: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs_:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--tag expects key=value, got {pair!r}")
        tags[key] = value
    return tags


def _request(args: argparse.Namespace) -> TrainRequest:
    from training.learning.request import TrainRequest

    try:
        return TrainRequest(**request_fields(args))
    except ValidationError as exc:
        raise UserError(validation_message(exc)) from exc


def run_train(args: argparse.Namespace) -> int:
    settings = load(Settings)
    if args.run_id:  # the job process of the training service's executor
        from training.jobs import worker

        if args.dataset or args.model:
            raise UserError("--run-id runs a recorded request: give no --dataset or --model")
        with progress_display(f"run {args.run_id[:12]}") as report:
            result = worker.run(args.run_id, settings, report)
        _print_result(result, args.json)
        return 0
    if not args.dataset or not args.model:
        raise UserError("train needs --dataset and --model (or --run-id)")
    from training.learning.pipeline import execute, plan
    from training.store.revision import checked_database
    from training.store.runs import RunStore

    request = _request(args)
    store = RunStore(checked_database(settings))
    checked = plan(request, settings)
    with progress_display(f"{checked.dataset.name} / {request.model}") as report:
        result = execute(checked, store, report)
    _print_result(result, args.json)
    return 0


def _print_result(result: TrainResult, as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    stdout.print(
        f"run {result.run_id} {result.status} in {result.duration_s:.1f}s; model {result.model_tag}"
    )
    pairs("Held-out metrics", dict(result.metrics))

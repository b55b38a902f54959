"""`training sweep`: a search over hyper-parameters, run to its end; `training sweeps list|show`.

`training sweep` records the sweep and its runs, then runs them as the training service
would: on the cluster that TRAINING_CLUSTER names, else as processes here (TRAINING_MAX_JOBS
at once). Ctrl-C (or SIGTERM) cancels the whole sweep: its runs end KILLED, none keeps a model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from training.cli.deployments import caller
from training.cli.output import fmt, json_flag, pairs, print_json, stderr, stdout, table
from training.cli.train import request_fields, request_flags, validation_message
from training.errors import UserError

if TYPE_CHECKING:
    from training.learning.sweeps import SweepPlan, SweepRequest
    from training.store.records import SweepInfo, SweepSummary
    from training.store.sweeps import Sweeps

POLL_S = 0.5


def register(commands: Any) -> None:
    sweep = commands.add_parser("sweep", help="run a grid or random search, one run per point")
    request_flags(sweep)
    for flag, metavar, text in (
        ("--grid", "KEY=V1,V2,...", "values to search (repeatable): every combination runs"),
        ("--range", "KEY=LOW..HIGH", "a range for --samples (repeatable); log:LOW..HIGH too"),
    ):
        sweep.add_argument(flag, action="append", default=[], metavar=metavar, help=text)
    sweep.add_argument("--samples", type=int, help="random search: this many runs drawn")
    sweep.add_argument("--metric", help="picks the best run (default accuracy, or rmse)")
    json_flag(sweep)
    sweep.set_defaults(handler=run_sweep)

    sweeps = commands.add_parser("sweeps", help="list and show sweeps")
    actions = sweeps.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="sweeps, newest first")
    listing.add_argument("--limit", type=int, default=50, help="rows (default 50)")
    json_flag(listing)
    listing.set_defaults(handler=sweeps_list)
    show = actions.add_parser("show", help="one sweep with every run")
    show.add_argument("sweep_id", help="sweep id or a unique prefix of 6+ characters")
    json_flag(show)
    show.set_defaults(handler=sweeps_show)


def _pairs_of(flag: str, items: list[str], split: bool) -> dict[str, Any]:
    from training.learning.estimators import parse_param_value

    found: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise UserError(f"{flag} expects KEY=VALUE, got {item!r}", field=flag.lstrip("-"))
        values = [parse_param_value(v.strip()) for v in raw.split(",")] if split else raw.strip()
        found[key.strip()] = values
    return found


def _request(args: argparse.Namespace) -> SweepRequest:
    from training.learning.sweeps import SweepRequest

    if not args.dataset or not args.model:
        raise UserError("sweep needs --dataset and --model")
    try:
        return SweepRequest(
            **request_fields(args),
            grid=_pairs_of("--grid", args.grid, split=True),
            ranges=_pairs_of("--range", args.range, split=False),
            samples=args.samples,
            metric=args.metric,
        )
    except ValidationError as exc:
        raise UserError(validation_message(exc)) from exc


def run_sweep(args: argparse.Namespace) -> int:
    from training.learning.sweeps import plan_sweep
    from training.settings import ServerSettings, load
    from training.store.revision import checked_database
    from training.store.runs import RunStore
    from training.store.sweeps import Sweeps

    request = _request(args)
    settings = load(ServerSettings)
    db = checked_database(settings)
    plan = plan_sweep(request, settings, settings.training_sweep_max_runs)
    sweeps = Sweeps(db)
    sweep_id = asyncio.run(_run(RunStore(db), sweeps, settings, plan))
    info = sweeps.get(sweep_id)
    _print_sweep(info, args.json)
    return 0 if info.status == "FINISHED" else 1


async def _run(store: Any, sweeps: Sweeps, settings: Any, plan: SweepPlan) -> str:
    """Record the sweep once its executor runs (a cluster out of reach records nothing), then
    run its runs to their end; an interrupt or a failure cancels them all (KILLED)."""
    from anyio.to_thread import run_sync

    from training.jobs.factory import make_executor
    from training.jobs.queue import this_process

    executor = make_executor(store, settings, recover=False)
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    await executor.start()
    try:
        sweep_id, runs = await run_sync(sweeps.create, plan.recorded_as(caller(), this_process()))
    except BaseException:
        await executor.shutdown(0)
        raise
    stderr.print(f"sweep {sweep_id}: {len(runs)} runs, best by {plan.metric} ({plan.goal})")
    try:
        for run_id in runs:
            await executor.submit(run_id)
        done = -1
        while True:
            info = await run_sync(sweeps.get, sweep_id)
            if info.progress.done != done:
                done = info.progress.done
                stderr.print(f"sweep {sweep_id[:12]}: {_progress_line(info)}", highlight=False)
            if done == info.progress.total:
                return sweep_id
            await asyncio.sleep(POLL_S)
    except BaseException as exc:  # an interrupt, or a failure: no run of it is left behind
        stderr.print(f"sweep {sweep_id[:12]}: cancelling", highlight=False)
        with contextlib.suppress(UserError):
            open_runs = await run_sync(sweeps.request_cancel, sweep_id)
            await asyncio.gather(*(executor.cancel(r) for r in open_runs), return_exceptions=True)
        if isinstance(exc, asyncio.CancelledError):
            raise KeyboardInterrupt from None
        raise
    finally:
        await executor.shutdown(0)


def _progress_line(info: SweepSummary) -> str:
    line = f"{info.progress.done} of {info.progress.total} runs ended"
    if info.best is not None:
        line += f"; best {info.metric} {fmt(info.best.value)} (run {info.best.id[:12]})"
    return line


def _store() -> Sweeps:
    from training.settings import Settings, load
    from training.store.revision import checked_database
    from training.store.sweeps import Sweeps

    return Sweeps(checked_database(load(Settings)))


def sweeps_list(args: argparse.Namespace) -> int:
    found = _store().recent(args.limit)
    if args.json:
        print_json({"sweeps": found})
        return 0
    table(
        None,
        ["sweep", "created", "status", "done", "dataset", "model", "metric", "best"],
        [
            [
                s.id[:12],
                s.created_at,
                s.status,
                f"{s.progress.done}/{s.progress.total}",
                s.dataset,
                s.model,
                s.metric,
                s.best.value if s.best else None,
            ]
            for s in found
        ],
    )
    return 0


def sweeps_show(args: argparse.Namespace) -> int:
    _print_sweep(_store().get(args.sweep_id), args.json)
    return 0


def _print_sweep(info: SweepInfo, as_json: bool) -> None:
    if as_json:
        print_json(info)
        return
    best = info.best
    pairs(
        f"Sweep {info.id}",
        {
            "status": info.status,
            "progress": f"{info.progress.done} of {info.progress.total} runs ended",
            "dataset / model": f"{info.dataset} / {info.model}",
            "metric": f"{info.metric} ({info.goal})",
            "best": f"{fmt(best.value)}: run {best.id} {best.params}" if best else None,
            "created": info.created_at,
            "cancelled": info.cancelled_at,
        },
    )
    keys = sorted({key for run in info.runs for key in run.params})
    table(
        "Runs",
        ["run", "status", "worker", *keys, info.metric, "error"],
        [
            [r.id[:12], r.status, r.worker, *(r.params.get(k) for k in keys), r.value, r.error]
            for r in info.runs
        ],
    )
    stdout.print(f"runs list --filter 'sweep = {info.id}' lists them in full")

"""`training runs ...`, `models list`, `promote`, `rollback`, `aliases ...`: inspect and promote."""

from __future__ import annotations

import argparse
from typing import Any

from training.cli.deployments import caller, request_canary
from training.cli.output import fmt, json_flag, pairs, print_json, stdout, table
from training.settings import Settings, load
from training.store.records import AliasInfo, RunInfo, RunStatus
from training.store.registry import Registry
from training.store.runs import RunStore

LIST_METRICS = 3  # metric columns shown by `runs list` besides the ordering one


def _store() -> RunStore:
    from training.store.revision import checked_database

    return RunStore(checked_database(load(Settings)))


def _registry() -> Registry:
    from training.store.revision import checked_database

    return Registry(checked_database(load(Settings)))


def register(commands: Any) -> None:
    runs = commands.add_parser("runs", help="list, show and compare runs")
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="runs, newest first, filtered and ordered")
    listing.add_argument("--experiment", help="only this experiment")
    listing.add_argument("--status", choices=[s.value for s in RunStatus])
    listing.add_argument(
        "--filter",
        dest="filter_text",
        metavar="EXPR",
        help='e.g. "metrics.accuracy > 0.9 and params.model = random_forest"',
    )
    listing.add_argument(
        "--order-by",
        metavar="KEY [asc|desc]",
        help="submitted_at (default), start_time, end_time or metrics.NAME",
    )
    listing.add_argument("--limit", type=int, default=50, help="rows per page (default 50)")
    listing.add_argument("--page-token", help="token printed by the previous page")
    json_flag(listing)
    listing.set_defaults(handler=runs_list)

    show = actions.add_parser("show", help="one run in full")
    show.add_argument("run_id", help="run id or a unique prefix of 6+ characters")
    json_flag(show)
    show.set_defaults(handler=runs_show)

    compare = actions.add_parser("compare", help="runs side by side")
    compare.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    json_flag(compare)
    compare.set_defaults(handler=runs_compare)
    _register_registry(commands)


def _register_registry(commands: Any) -> None:
    """`models list`, `promote`, `rollback`, `aliases list|show`."""
    models = commands.add_parser("models", help="registered model versions")
    model_actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    model_list = model_actions.add_parser("list", help="model versions, newest first")
    model_list.add_argument("--name", help="only this model name")
    json_flag(model_list)
    model_list.set_defaults(handler=models_list)

    promote = commands.add_parser("promote", help="point an alias at a model version")
    promote.add_argument("model_tag", help="e.g. iris-logistic_regression:abc123")
    promote.add_argument("--alias", default="production", help="alias name (default production)")
    promote.add_argument(
        "--canary",
        type=int,
        metavar="PERCENT",
        help="first send only this share of requests (1-99) to the new version; "
        "`training canary promote|abort` ends the step",
    )
    json_flag(promote)
    promote.set_defaults(handler=promote_model)

    rollback = commands.add_parser("rollback", help="move an alias back to its previous target")
    rollback.add_argument("--alias", default="production", help="alias name (default production)")
    json_flag(rollback)
    rollback.set_defaults(handler=rollback_alias)

    aliases = commands.add_parser("aliases", help="aliases and their history")
    alias_actions = aliases.add_subparsers(dest="action", required=True, metavar="ACTION")
    alias_list = alias_actions.add_parser("list", help="every alias and its target")
    json_flag(alias_list)
    alias_list.set_defaults(handler=aliases_list)
    alias_show = alias_actions.add_parser("show", help="one alias with every move")
    alias_show.add_argument("name")
    json_flag(alias_show)
    alias_show.set_defaults(handler=aliases_show)


def runs_list(args: argparse.Namespace) -> int:
    from training.store.search import RunSearch

    search = RunSearch.parse(
        args.filter_text, args.order_by, experiment=args.experiment, status=args.status
    )
    page = _store().search(search, limit=args.limit, page_token=args.page_token)
    if args.json:
        print_json(page)
        return 0
    shown: list[str] = []
    if search.order.kind == "metric":
        shown.append(search.order.key)
    for cond in search.conditions:
        if cond.kind == "metric" and cond.key not in shown:
            shown.append(cond.key)
    for run in page.runs:
        for key in run.metrics:
            if len(shown) >= LIST_METRICS + 1:
                break
            if key not in shown and not key.startswith("cv_"):
                shown.append(key)
    table(
        None,
        ["run", "experiment", "status", "model", "dataset", "started", *shown],
        [
            [
                r.id[:12],
                r.experiment,
                r.status,
                r.model_name,
                r.dataset.name,
                r.start_time,
                *(r.metrics.get(k) for k in shown),
            ]
            for r in page.runs
        ],
    )
    if page.next_page_token:
        stdout.print(f"more: --page-token {page.next_page_token}")
    return 0


def _run_summary(run: RunInfo) -> dict[str, Any]:
    return {
        "run id": run.id,
        "experiment": run.experiment,
        "status": run.status,
        "stage": run.stage,
        "started": run.start_time,
        "ended": run.end_time,
        "duration (s)": run.duration_s,
        "model": run.model_name,
        "task": run.task,
        "dataset": run.dataset.name,
        "dataset sha256": run.dataset.sha256,
        "rows": run.dataset.rows,
        "target": run.dataset.target,
        "classes": ", ".join(map(str, run.dataset.classes)) if run.dataset.classes else None,
        "model tag": run.model_tag,
        "error": run.error,
        "python": run.environment.get("python"),
        "libraries": ", ".join(f"{k} {v}" for k, v in run.environment.get("libraries", {}).items()),
        "git commit": run.environment.get("git_commit"),
    }


def runs_show(args: argparse.Namespace) -> int:
    store = _store()
    run = store.get_run(args.run_id)
    history = store.metric_history(run.id)
    if args.json:
        print_json({**run.model_dump(mode="json"), "metric_history": history})
        return 0
    pairs(f"Run {run.id}", _run_summary(run))
    pairs("Parameters", dict(run.params))
    table(
        "Metrics",
        ["metric", "value", "steps"],
        [
            [key, value, sum(1 for p in history if p.key == key)]
            for key, value in run.metrics.items()
        ],
    )
    if run.tags:
        pairs("Tags", dict(run.tags))
    if run.dataset.columns:
        table("Columns", ["name", "type"], [[c["name"], c["type"]] for c in run.dataset.columns])
    return 0


def runs_compare(args: argparse.Namespace) -> int:
    runs = _store().get_runs(args.run_ids)
    if args.json:
        print_json({"runs": runs})
        return 0
    rows: list[list[Any]] = [
        ["status", *(r.status for r in runs)],
        ["model", *(r.model_name for r in runs)],
        ["dataset", *(r.dataset.name for r in runs)],
        ["model tag", *(r.model_tag for r in runs)],
        ["duration (s)", *(r.duration_s for r in runs)],
    ]
    for prefix, attr in (("params.", "params"), ("metrics.", "metrics")):
        keys = sorted({k for r in runs for k in getattr(r, attr)})
        for key in keys:
            values = [getattr(r, attr).get(key) for r in runs]
            differs = len({fmt(v) for v in values}) > 1
            rows.append([f"{'* ' if differs else ''}{prefix}{key}", *values])
    table("Runs compared (* differs)", ["", *(r.id[:12] for r in runs)], rows)
    return 0


def models_list(args: argparse.Namespace) -> int:
    versions = _registry().list_models(args.name)
    if args.json:
        print_json({"models": versions})
        return 0
    table(
        None,
        ["tag", "run", "created", "aliases"],
        [[v.tag, v.run_id[:12], v.created_at, ", ".join(v.aliases)] for v in versions],
    )
    return 0


def _print_alias(alias: AliasInfo, as_json: bool) -> None:
    if as_json:
        print_json(alias)
        return
    stdout.print(f"{alias.name} -> {alias.model_tag}")


def promote_model(args: argparse.Namespace) -> int:
    if args.canary is not None:
        return request_canary(_registry(), args, caller())
    _print_alias(_registry().promote(args.model_tag, args.alias, requested_by=caller()), args.json)
    return 0


def rollback_alias(args: argparse.Namespace) -> int:
    _print_alias(_registry().rollback(args.alias, requested_by=caller()), args.json)
    return 0


def aliases_list(args: argparse.Namespace) -> int:
    aliases = _registry().list_aliases()
    if args.json:
        print_json({"aliases": aliases})
        return 0
    table(
        None,
        ["alias", "model tag", "updated", "moves"],
        [[a.name, a.model_tag, a.updated_at, len(a.history)] for a in aliases],
    )
    return 0


def aliases_show(args: argparse.Namespace) -> int:
    alias = _registry().get_alias(args.name)
    if args.json:
        print_json(alias)
        return 0
    last = alias.last_deployment
    pairs(
        f"Alias {alias.name}",
        {
            "requested": alias.model_tag,
            "live": alias.live_tag or "(never rolled out)",
            "last rollout": (
                f"#{last.id} {last.to_tag}: {last.result.value}"
                + (f" ({last.error.splitlines()[0]})" if last and last.error else "")
                if last
                else "(none)"
            ),
        },
    )
    table(
        "History",
        ["when", "action", "from", "to", "by"],
        [[m.moved_at, m.action, m.from_tag, m.to_tag, m.requested_by] for m in alias.history],
    )
    return 0

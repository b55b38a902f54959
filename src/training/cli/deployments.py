"""`training deployments`: the rollouts of aliases to the running stack, newest first;
`training canary promote|abort`: the end of a canary step (`training promote --canary`)."""

from __future__ import annotations

import argparse
import getpass
from typing import TYPE_CHECKING, Any

from training.cli.output import json_flag, print_json, stdout, table

if TYPE_CHECKING:
    from training.store.deployments import Deployments
    from training.store.records import DeploymentInfo
    from training.store.registry import Registry


def register(commands: Any) -> None:
    listing = commands.add_parser(
        "deployments", help="rollouts of an alias's target to the running stack, newest first"
    )
    listing.add_argument("--alias", help="only this alias")
    listing.add_argument("--limit", type=int, default=20, help="rows (default 20)")
    json_flag(listing)
    listing.set_defaults(handler=deployments_list)

    canary = commands.add_parser("canary", help="end the canary step of an alias")
    actions = canary.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("promote", "the canary's version takes all the requests (the alias moves to it)"),
        ("abort", "the canary's instances drain and stop; the live version takes them all"),
    ):
        ending = actions.add_parser(action, help=text)
        ending.add_argument("--alias", default="production", help="alias (default production)")
        json_flag(ending)
        ending.set_defaults(handler=canary_end)


def caller() -> str:
    """Who runs this command, for the records that name who asked (alias moves, rollouts)."""
    return f"cli:{getpass.getuser()}"


def _stores() -> tuple[Registry, Deployments]:
    from training.settings import Settings, load
    from training.store.deployments import Deployments
    from training.store.registry import Registry
    from training.store.revision import checked_database

    db = checked_database(load(Settings))
    return Registry(db), Deployments(db)


def _print_row(row: DeploymentInfo, as_json: bool, text: str) -> None:
    if as_json:
        print_json(row)
    else:
        stdout.print(text, highlight=False)


def request_canary(registry: Registry, args: argparse.Namespace, by: str) -> int:
    """`training promote TAG --alias A --canary P`: asked of the running stack, which starts
    the new version beside the live one; the alias moves only at `training canary promote`."""
    from training.store.deployments import Deployments

    tag = registry.get_version(args.model_tag).tag
    current = registry.get_alias(args.alias).model_tag
    row = Deployments(registry.db).request_canary(args.alias, current, tag, by, args.canary)
    _print_row(
        row,
        args.json,
        f"canary {row.id}: {args.canary}% of {args.alias}'s requests to {tag} once the running "
        "stack started it (`training deployments`); end it with `training canary promote` "
        "or `training canary abort`",
    )
    return 0


def canary_end(args: argparse.Namespace) -> int:
    from training.errors import NotFound
    from training.store.records import DeploymentResult

    registry, deployments = _stores()
    row = deployments.open_canary(args.alias)
    if row is None:
        raise NotFound(f"no canary step is running for alias {args.alias!r}", field="alias")
    if args.action == "promote":
        registry.promote(row.to_tag, args.alias, requested_by=caller())
        text = f"{args.alias} -> {row.to_tag}: the running stack moves all requests to it"
    else:
        row = deployments.ended(row.id, DeploymentResult.ABORTED, f"aborted by {caller()}")
        text = f"canary {row.id} of {row.to_tag} aborted: its instances drain and stop"
    _print_row(row, args.json, text)
    return 0


def deployments_list(args: argparse.Namespace) -> int:
    from training.settings import Settings, load
    from training.store.deployments import Deployments
    from training.store.registry import check_alias_name
    from training.store.revision import checked_database

    if args.alias is not None:
        check_alias_name(args.alias)
    rows = Deployments(checked_database(load(Settings))).recent(args.alias, max(1, args.limit))
    if args.json:
        print_json({"deployments": rows})
        return 0
    table(
        None,
        ["id", "alias", "from", "to", "by", "started", "live at", "result", "error"],
        [
            [
                d.id,
                d.alias,
                d.from_tag,
                d.to_tag,
                d.requested_by,
                d.started_at,
                d.live_at,
                d.result.value,
                (d.error or "").splitlines()[0][:80] if d.error else "",
            ]
            for d in rows
        ],
    )
    return 0

"""`training config` and `training db ...`: settings and the run store's schema."""

from __future__ import annotations

import argparse
from typing import Any

from training.cli.output import json_flag, pairs, print_json, stdout
from training.settings import Settings, load
from training.store.db import get_database


def register(commands: Any) -> None:
    config = commands.add_parser("config", help="print the effective settings (secrets masked)")
    json_flag(config)
    config.set_defaults(handler=show_config)

    db = commands.add_parser("db", help="the run store's schema (Alembic)")
    actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = actions.add_parser("upgrade", help="migrate the run store to the newest schema")
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.set_defaults(handler=db_upgrade)
    downgrade = actions.add_parser("downgrade", help="migrate the run store back to a revision")
    downgrade.add_argument("revision", help="target revision, e.g. -1 or base")
    downgrade.set_defaults(handler=db_downgrade)
    current = actions.add_parser("current", help="show the run store's schema revision")
    json_flag(current)
    current.set_defaults(handler=db_current)
    check = actions.add_parser(
        "check", help="exit 1 unless the schema is current and matches the code"
    )
    json_flag(check)
    check.set_defaults(handler=db_check)


def show_config(args: argparse.Namespace) -> int:
    view = load(Settings).public_view()
    if args.json:
        print_json(view)
    else:
        pairs("Effective settings", view)
    return 0


def _status() -> dict[str, Any]:
    from training.store import revision

    db = get_database(load(Settings))
    current, head = revision.current_revision(db), revision.head_revision()
    return {
        "database": load(Settings).public_view()["DATABASE_URL"],
        "current": current,
        "head": head,
        "up_to_date": current == head,
    }


def db_upgrade(args: argparse.Namespace) -> int:
    from training.store import revision

    db = get_database(load(Settings))
    before = revision.current_revision(db)
    revision.upgrade(db, args.revision)
    after = revision.current_revision(db)
    stdout.print(
        f"run store upgraded: {before or 'empty'} -> {after}"
        if before != after
        else f"run store already at {after}"
    )
    return 0


def db_downgrade(args: argparse.Namespace) -> int:
    from training.store import revision

    db = get_database(load(Settings))
    revision.downgrade(db, args.revision)
    stdout.print(f"run store now at {revision.current_revision(db) or 'base (empty)'}")
    return 0


def db_current(args: argparse.Namespace) -> int:
    status = _status()
    if args.json:
        print_json(status)
    else:
        note = "up to date" if status["up_to_date"] else "behind: run `training db upgrade`"
        stdout.print(f"{status['current'] or 'none (empty)'} (head {status['head']}, {note})")
    return 0


def db_check(args: argparse.Namespace) -> int:
    from training.store import revision

    status = _status()
    drift = (
        [str(d) for d in revision.schema_drift(get_database(load(Settings)))]
        if status["up_to_date"]
        else []
    )
    status["drift"] = drift
    ok = status["up_to_date"] and not drift
    if args.json:
        print_json({**status, "ok": ok})
    elif ok:
        stdout.print(f"ok: run store at head {status['head']} and matching the models")
    elif not status["up_to_date"]:
        stdout.print(
            f"behind: at {status['current'] or 'none'}, head is {status['head']}; "
            "run `training db upgrade`"
        )
    else:
        stdout.print("schema differs from the models:\n  " + "\n  ".join(drift))
    return 0 if ok else 1

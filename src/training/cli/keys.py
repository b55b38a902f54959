"""`training keys create | list | revoke`: API keys, shown once, stored as salted hashes."""

from __future__ import annotations

import argparse
from typing import Any

from training.cli.output import json_flag, print_json, stderr, stdout, table
from training.ops.keys import KeyRing
from training.serving.keys import PRIVATE, SCOPES, KeyRecord
from training.settings import Settings, load


def register(commands: Any) -> None:
    keys = commands.add_parser("keys", help="API keys for the prediction and training APIs")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a key (printed once, stored hashed)")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument(
        "--scope", choices=SCOPES, default="predict", help="predict (default) or admin"
    )
    json_flag(create)
    create.set_defaults(handler=keys_create)
    listing = actions.add_parser("list", help="keys and their state (never the keys themselves)")
    json_flag(listing)
    listing.set_defaults(handler=keys_list)
    revoke = actions.add_parser("revoke", help="revoke the active keys with this id or name")
    revoke.add_argument("key", metavar="ID_OR_NAME")
    json_flag(revoke)
    revoke.set_defaults(handler=keys_revoke)


def _ring() -> KeyRing:
    return KeyRing(load(Settings).keys_path)


def _shown(record: KeyRecord) -> dict[str, Any]:
    """What may be shown of a key: never its salt or digest."""
    return record.model_dump(exclude=set(PRIVATE))


def keys_create(args: argparse.Namespace) -> int:
    record, key = _ring().create(args.name, args.scope)
    if args.json:
        print_json({**_shown(record), "key": key})
        return 0
    stdout.print(key, highlight=False)
    stderr.print(
        f"key {record.id} ({record.scope}) for {record.name!r}: shown once, store it now; "
        "send it as `Authorization: Bearer <key>`",
        highlight=False,
    )
    return 0


def keys_list(args: argparse.Namespace) -> int:
    records = _ring().records()
    if args.json:
        print_json({"keys": [_shown(r) for r in records]})
        return 0
    table(
        None,
        ["id", "name", "scope", "created", "revoked"],
        [[r.id, r.name, r.scope, r.created_at, r.revoked_at] for r in records],
    )
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    revoked = _ring().revoke(args.key)
    if args.json:
        print_json({"revoked": [_shown(r) for r in revoked]})
    else:
        for record in revoked:
            stdout.print(f"revoked key {record.id} ({record.name})")
    return 0

"""`training keys create | list | revoke`: API keys, shown once, stored as salted hashes."""

from __future__ import annotations

import argparse
from typing import Any

from training.cli.app import json_flag
from training.cli.output import print_json, stderr, stdout, table
from training.config import get_settings
from training.keys import SCOPES, KeyStore


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


def _store() -> KeyStore:
    return KeyStore(get_settings().keys_path)


def keys_create(args: argparse.Namespace) -> int:
    record, key = _store().create(args.name, args.scope)
    if args.json:
        print_json({**record.public(), "key": key})
        return 0
    stdout.print(key, highlight=False)
    stderr.print(
        f"key {record.id} ({record.scope}) for {record.name!r}: shown once, store it now; "
        "send it as `Authorization: Bearer <key>`",
        highlight=False,
    )
    return 0


def keys_list(args: argparse.Namespace) -> int:
    records = _store().records()
    if args.json:
        print_json({"keys": [r.public() for r in records]})
        return 0
    table(
        None,
        ["id", "name", "scope", "created", "revoked"],
        [[r.id, r.name, r.scope, r.created_at, r.revoked_at] for r in records],
    )
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    revoked = _store().revoke(args.key)
    if args.json:
        print_json({"revoked": [r.public() for r in revoked]})
    else:
        for record in revoked:
            stdout.print(f"revoked key {record.id} ({record.name})")
    return 0

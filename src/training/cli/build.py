"""`training build`: the bento of a registry alias (default production), exported to bentos/."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from training.cli.output import json_flag, print_json, stdout
from training.cli.progress import progress_display
from training.settings import Settings, load


def register(commands: Any) -> None:
    build = commands.add_parser(
        "build", help="build the bento of an alias and export it to bentos/"
    )
    which = build.add_mutually_exclusive_group()
    which.add_argument("--alias", default="production", help="registry alias (default production)")
    which.add_argument("--model-tag", help="an exact registered model tag instead of an alias")
    build.add_argument("--out", type=Path, help="folder for the exported archive (default bentos/)")
    json_flag(build)
    build.set_defaults(handler=run_build)


def run_build(args: argparse.Namespace) -> int:
    from training.ops.bento import build, resolve_model
    from training.store.registry import Registry
    from training.store.revision import checked_database

    registry = Registry(checked_database(load(Settings)))
    tag = resolve_model(registry, args.alias, args.model_tag)
    alias = None if args.model_tag else args.alias
    with progress_display(f"bento of {tag}") as report:
        built = build(tag, report, alias=alias, out_dir=args.out)
    if args.json:
        print_json(built)
    else:
        stdout.print(f"bento {built.bento_tag} serves model {built.model_tag}")
        stdout.print(
            f"archive {built.archive} ({built.size_bytes / 1024:.0f} KiB, {built.seconds:.1f} s)"
        )
        stdout.print(f"serve it: bentoml serve {built.bento_tag} --port 3000")
    return 0

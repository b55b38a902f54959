"""`training build`: the bento of a registry alias (default production), exported to bentos/."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.cli.output import json_flag, print_json, stdout
from training.cli.progress import progress_display
from training.settings import Settings, load

if TYPE_CHECKING:
    from training.ops.bento import BuiltBento


def _which_model(parser: Any) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--alias", default="production", help="registry alias (default production)")
    which.add_argument("--model-tag", help="an exact registered model tag instead of an alias")


def register(commands: Any) -> None:
    build = commands.add_parser(
        "build", help="build the bento of an alias and export it to bentos/"
    )
    _which_model(build)
    build.add_argument("--out", type=Path, help="folder for the exported archive (default bentos/)")
    json_flag(build)
    build.set_defaults(handler=run_build)

    image = commands.add_parser(
        "containerize", help="build the OCI image of an alias's bento with podman (no registry)"
    )
    _which_model(image)
    image.add_argument(
        "--edge",
        action="store_true",
        help="build the edge's image instead (Caddy with the project's Caddyfile, for "
        "deploy/kubernetes/)",
    )
    json_flag(image)
    image.set_defaults(handler=run_containerize)


def _built(args: argparse.Namespace, report: Any, out: Path | None = None) -> BuiltBento:
    from training.ops.bento import build, resolve_model
    from training.store.registry import Registry
    from training.store.revision import checked_database

    registry = Registry(checked_database(load(Settings)))
    tag = resolve_model(registry, args.alias, args.model_tag)
    return build(tag, report, alias=None if args.model_tag else args.alias, out_dir=out)


def run_containerize(args: argparse.Namespace) -> int:
    from training.ops.image import containerize, edge_image

    cache = load(Settings).container_cache_dir
    with progress_display("image") as report:
        if args.edge:
            image = edge_image(cache, report)
        else:
            image = containerize(_built(args, report).bento_tag, cache, report)
    if args.json:
        print_json(image)
    else:
        stdout.print(image.image, highlight=False)
        what = (
            "the edge's image (Caddy)"
            if image.bento_tag is None
            else f"image of bento {image.bento_tag} (model {image.model_tag})"
        )
        stdout.print(
            f"{what}, {image.size_bytes / 1e6:.0f} MB, built in {image.seconds:.1f} s "
            f"on {image.base_image}",
            highlight=False,
        )
    return 0


def run_build(args: argparse.Namespace) -> int:
    with progress_display("bento") as report:
        built = _built(args, report, args.out)
    if args.json:
        print_json(built)
    else:
        stdout.print(f"bento {built.bento_tag} serves model {built.model_tag}")
        stdout.print(
            f"archive {built.archive} ({built.size_bytes / 1024:.0f} KiB, {built.seconds:.1f} s)"
        )
        stdout.print(f"serve it: bentoml serve {built.bento_tag} --port 3000")
    return 0

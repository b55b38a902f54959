"""Build the bento for a registry alias and export it for ops: `training build`.

The alias is resolved to an exact model tag here, at build time, and passed to `bentoml build`
as the bento argument ``model_tag``; the bento records it (bento.yaml ``args``), so a served
bento never needs the run database. ``bentoml build`` runs offline: packages are not locked
against an index (``lock_packages: false``); the pins come from our ``uv.lock``, exported to
the requirements file the bentofile names.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from training.errors import UserError
from training.learning import modelstore
from training.ops.processes import run_checked, tool
from training.progress import Reporter
from training.settings import project_root
from training.store.registry import Registry

BENTO_NAME = "prediction"
REQUIREMENTS = "requirements.bento.txt"  # inside the build context (src/), git-ignored


class BuiltBento(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    bento_tag: str
    model_tag: str
    alias: str | None
    archive: str
    size_bytes: int
    seconds: float


def resolve_model(registry: Registry, alias: str | None, model_tag: str | None) -> str:
    """The exact model tag to package: an alias's target, or a tag that the registry knows."""
    if model_tag:
        return registry.get_version(model_tag).tag
    assert alias is not None
    return registry.get_alias(alias).model_tag


def export_requirements(root: Path) -> Path:
    """Pin the bento's packages exactly as uv.lock does (no network: --frozen)."""
    target = root / "src" / REQUIREMENTS
    run_checked(
        [
            tool("uv"),
            "export",
            "--frozen",
            "--no-dev",
            "--no-hashes",
            "--no-emit-project",
            "--no-header",
            "--no-annotate",
            "--quiet",
            "--output-file",
            str(target),
        ],
        "uv export of the locked packages",
        root,
    )
    return target


def build(
    tag: str, report: Reporter, *, alias: str | None, out_dir: Path | None = None
) -> BuiltBento:
    """Build the bento serving this exact model tag (see resolve_model) and export it."""
    started = time.monotonic()
    root = project_root()
    if not (root / "bentofile.yaml").is_file():
        raise UserError(f"no bentofile.yaml in {root}: build from the project checkout")
    modelstore.require(tag)
    report("pinning packages from uv.lock", 0.1)
    export_requirements(root)
    report("bentoml build", 0.25)
    output = run_checked(
        [
            tool("bentoml"),
            "build",
            "-f",
            "bentofile.yaml",
            "src",
            "--output",
            "tag",
            "--arg",
            f"model_tag={tag}",
        ],
        "bentoml build",
        root,
    )
    bento_tag = next(
        (
            line.removeprefix("__tag__:")
            for line in output.splitlines()
            if line.startswith("__tag__:")
        ),
        None,
    )
    if bento_tag is None:
        raise UserError(f"bentoml build printed no tag: {output.strip()[-300:]}")
    report("exporting the archive", 0.8)
    import bentoml

    target = archive_path(bento_tag, out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    archive = Path(bentoml.export_bento(bento_tag, str(target)))
    report("built", 1.0)
    return BuiltBento(
        bento_tag=bento_tag,
        model_tag=tag,
        alias=alias,
        archive=str(archive),
        size_bytes=archive.stat().st_size,
        seconds=round(time.monotonic() - started, 2),
    )


def archive_path(bento_tag: str, out_dir: Path | None = None) -> Path:
    """Where `training build` exports a bento (default: bentos/ in the checkout)."""
    return (out_dir or project_root() / "bentos") / f"{bento_tag.replace(':', '-')}.bento"


def stored_bento(model_tag: str) -> str | None:
    """The newest bento in BentoML's store that serves ``model_tag`` (one imported from an
    archive, say), or None."""
    import bentoml

    found = [
        b for b in bentoml.bentos.list(BENTO_NAME) if b.info.args.get("model_tag") == model_tag
    ]
    newest = max(found, key=lambda b: b.info.creation_time, default=None)
    return None if newest is None else str(newest.tag)

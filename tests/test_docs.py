"""The README stays true: every setting is in its configuration table and nothing else is."""

from __future__ import annotations

import re
from pathlib import Path

from training.settings import (
    EdgeSettings,
    RolloutSettings,
    ServerSettings,
    ServiceSettings,
    Settings,
)

SETTINGS_CLASSES = (Settings, ServerSettings, ServiceSettings, EdgeSettings, RolloutSettings)
CADDYFILE_ONLY = {
    "SERVICE_UPSTREAM",
    "TRAINING_UPSTREAM",
    "HEALTH_INTERVAL",
    "HEALTH_FAILS",
    "UPSTREAM_IDLE",
    "CANARY_SHARE_FILE",
}


README = Path(__file__).resolve().parents[1] / "README.md"


def documented_variables() -> set[str]:
    text = README.read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section, flags=re.MULTILINE))


def test_every_setting_is_documented_and_every_documented_setting_exists() -> None:
    fields = {name.upper() for cls in SETTINGS_CLASSES for name in cls.model_fields}
    assert documented_variables() == fields | CADDYFILE_ONLY


def test_every_caddyfile_placeholder_is_documented() -> None:
    code = [
        line
        for line in (README.parent / "Caddyfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    placeholders = set(re.findall(r"\{\$([A-Z0-9_]+)", "\n".join(code)))
    assert placeholders and placeholders <= documented_variables()


def test_readme_names_the_two_commands_the_makefile_runs() -> None:
    text = README.read_text()
    assert "make up" in text and "make test" in text
    makefile = (README.parent / "Makefile").read_text()
    assert re.search(r"^up: ", makefile, re.MULTILINE) and re.search(
        r"^test: ", makefile, re.MULTILINE
    )
    assert "make test" in (README.parent / ".ci" / "run").read_text()

"""The dashboard's files ship with the package: the vendored uPlot is the npm release it names,
unchanged, with its licence; no page loads anything from another origin."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from training.api.ui.dashboard import STATIC, TEMPLATES

VENDOR = STATIC / "vendor" / "uplot"


def test_the_vendored_plotting_library_is_the_release_it_names() -> None:
    source = (VENDOR / "SOURCE.txt").read_text()
    digests = re.findall(r"^([0-9a-f]{64})  package/dist/(\S+)$", source, re.MULTILINE)
    assert {name for _, name in digests} == {"uPlot.iife.min.js", "uPlot.min.css"}
    for digest, name in digests:
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (VENDOR / "LICENSE").read_text()


def test_templates_load_nothing_from_elsewhere_and_hold_no_inline_script_or_style() -> None:
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), template.name
        assert " style=" not in text and "<style" not in text, template.name
        assert not re.search(r"\son[a-z]+=", text), template.name  # no inline handlers
        for script in re.findall(r"<script([^>]*)>(.*?)</script>", text, re.S):
            attributes, body = script
            assert ("src=" in attributes and not body.strip()) or "application/json" in attributes


def test_the_package_carries_every_file_a_page_names(tmp_path: Path) -> None:
    named = set()
    for template in TEMPLATES.glob("*.html"):
        named |= set(re.findall(r"static\('([^']+)'\)", template.read_text()))
    assert named and all((STATIC / name).is_file() for name in named)

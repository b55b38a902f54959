"""Output for people (rich tables on stdout) and for programs (one JSON document on stdout)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

# Piped output is not cut to 80 columns: tables keep one line per row for grep and less.
# No markup: what is printed holds user data (tags, errors, names) that may contain "[...]".
stdout = Console(soft_wrap=True, markup=False, width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, soft_wrap=True, markup=False)


def json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _encode(value: Any) -> Any:
    """Records (pydantic models, anywhere in the document) by their own serializer."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_encode) + "\n")


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(Text(fmt(v)) for v in row))
    stdout.print(grid)


def pairs(title: str, items: dict[str, Any]) -> None:
    table(title, ["key", "value"], [[k, v] for k, v in items.items()])

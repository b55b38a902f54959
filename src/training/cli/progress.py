"""A training's progress as people see it: a bar on a terminal, else one line per stage."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from training.cli.output import stderr
from training.progress import Reporter


@contextlib.contextmanager
def progress_display(title: str) -> Iterator[Reporter]:
    if not stderr.is_terminal:

        def plain(stage: str, fraction: float) -> None:
            stderr.print(f"{title}: {stage} ({fraction:.0%})", highlight=False)

        yield plain
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=stderr, transient=False) as bar:
        task = bar.add_task(title, total=1.0)

        def update(stage: str, fraction: float) -> None:
            bar.update(task, completed=fraction, description=f"{title}: {stage}")

        yield update

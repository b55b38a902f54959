"""Where BentoML's model store lives, and the lock our processes take to change it."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path

from training.filelock import exclusive


def home() -> Path:
    """BentoML's home as BentoML itself resolves it (settings hand BENTOML_HOME over to it)."""
    return Path(os.environ.get("BENTOML_HOME", "~/bentoml")).expanduser()


def changing() -> AbstractContextManager[None]:
    """Held while a model is saved or deleted.

    BentoML's store is not safe for concurrent writers: saving rewrites the shared ``latest``
    file (truncate, then write) and may list every version of the name, including one another
    process is still copying. Eight trainings finishing together then failed one run in a few
    with "does not contain a 'model.yaml'". Saves are short (a copy), so one at a time is cheap.
    """
    return exclusive(home() / ".training-models.lock")

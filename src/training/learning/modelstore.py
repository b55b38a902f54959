"""BentoML's model store as our processes use it: where it is, saving, deleting, looking up.

BentoML's store is not safe for concurrent writers: saving rewrites the shared ``latest`` file
(truncate, then write) and may list every version of the name, including one another process
is still copying. Eight trainings finishing together then failed one run in a few with "does
not contain a 'model.yaml'". Every save and delete here holds one file lock; saves are short
(a copy), so one at a time is cheap.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from training.errors import UserError
from training.filelock import exclusive
from training.serving.card import ModelMetadata


def home() -> Path:
    """BentoML's home as BentoML itself resolves it (settings hand BENTOML_HOME over to it)."""
    return Path(os.environ.get("BENTOML_HOME", "~/bentoml")).expanduser()


def _changing() -> contextlib.AbstractContextManager[None]:
    return exclusive(home() / ".training-models.lock")


def save(tag: str, model: Any, metadata: ModelMetadata, labels: dict[str, str]) -> None:
    """Save a fitted pipeline under ``tag`` with the metadata the service reads back, and its
    serving form beside it (``serving.fastpath``: what lets a worker serve without loading
    scikit-learn), as ``bentoml.sklearn.save_model`` saves a model, plus that one file."""
    import bentoml
    import joblib
    from bentoml.models import ModelContext
    from bentoml.types import ModelSignature
    from sklearn import __version__ as sklearn_version

    from training.serving import fastpath

    form = fastpath.describe(model, metadata.features)
    with (
        _changing(),
        bentoml.models.create(
            tag,
            # What bentoml.sklearn.save_model records, so bentoml.sklearn.load_model reads it.
            module="bentoml.sklearn",
            context=ModelContext(
                framework_name="sklearn", framework_versions={"scikit-learn": sklearn_version}
            ),
            labels=labels,
            # BentoML refuses None in metadata; an absent key reads back as None all the same.
            metadata=metadata.model_dump(mode="json", exclude_none=True),
            signatures={m: ModelSignature(batchable=False) for m in ("predict", "predict_proba")},
        ) as stored,
    ):
        joblib.dump(model, stored.path_of("saved_model.pkl"))
        if form is not None:
            Path(stored.path_of(fastpath.SERVING_FILE)).write_text(form.model_dump_json())


def delete(tag: str) -> None:
    """Take a model back (best effort: the failure that made us do it is what gets reported)."""
    import bentoml

    with contextlib.suppress(Exception), _changing():
        bentoml.models.delete(tag)


def require(tag: str) -> None:
    """Refuse, naming the likely cause, a registered model that this store does not hold."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        bentoml.models.get(tag)
    except NotFound as exc:
        raise UserError(
            f"model {tag} is in the registry but not in BentoML's store at {home()}; "
            "is BENTOML_HOME the one the model was trained with?"
        ) from exc

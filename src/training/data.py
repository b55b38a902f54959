"""Data sets: the ones scikit-learn ships and CSV files; their schema and fingerprint."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from training.entities import DatasetInfo
from training.errors import UserError
from training.features import Feature, FeatureSchema, FeatureType

if TYPE_CHECKING:
    import pandas as pd

Task = Literal["classification", "regression"]
SHIPPED = ("iris", "wine", "breast_cancer", "diabetes", "digits")
# Integer targets with at most this many distinct values are taken for class labels.
MAX_INTEGER_CLASSES = 20


@dataclass(frozen=True)
class Dataset:
    name: str
    frame: pd.DataFrame
    target: str
    sha256: str

    @property
    def feature_names(self) -> list[str]:
        return [c for c in self.frame.columns if c != self.target]

    def infer_task(self) -> Task:
        y = self.frame[self.target].dropna()
        kind = y.dtype.kind
        if kind in "OSUbc" or str(y.dtype) in ("string", "category", "str"):
            return "classification"
        if kind in "iu" and y.nunique() <= MAX_INTEGER_CLASSES:
            return "classification"
        if kind == "f" and y.nunique() <= MAX_INTEGER_CLASSES and (y == y.round()).all():
            return "classification"
        return "regression"

    def feature_schema(self) -> FeatureSchema:
        features: list[Feature] = []
        for name in self.feature_names:
            column = self.frame[name]
            ftype = column_type(column)
            if ftype == "number":
                present = column.dropna()
                features.append(
                    Feature(
                        name,
                        "number",
                        minimum=float(present.min()) if len(present) else None,
                        maximum=float(present.max()) if len(present) else None,
                    )
                )
            elif ftype == "string":
                cats = sorted(str(v) for v in column.dropna().unique())
                features.append(Feature(name, "string", categories=tuple(cats)))
            else:
                features.append(Feature(name, ftype))
        return FeatureSchema(tuple(features))

    def info(self, classes: list[Any] | None = None) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            sha256=self.sha256,
            rows=len(self.frame),
            columns=[{"name": c, "type": column_type(self.frame[c])} for c in self.frame.columns],
            target=self.target,
            classes=classes,
        )


def column_type(column: pd.Series[Any]) -> FeatureType:
    kind = column.dtype.kind
    if kind == "b":
        return "boolean"
    if kind in "iuf":
        return "number"
    return "string"


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def _load_shipped(name: str) -> pd.DataFrame:
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    bunch = loader(as_frame=True)
    frame: pd.DataFrame = bunch.frame.rename(
        columns={c: _snake(str(c)) for c in bunch.frame.columns}
    )
    names = getattr(bunch, "target_names", None)
    if name != "diabetes" and names is not None and len(names) and isinstance(names[0], str):
        # Class labels as people know them ("setosa"), not their codes.
        frame["target"] = [str(names[i]) for i in frame["target"]]
    return frame


def _read_csv(path: Path) -> tuple[pd.DataFrame, str]:
    import pandas as pd

    if not path.is_file():
        raise UserError(f"dataset file not found: {path}", field="dataset")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise UserError(f"dataset {path} is empty", field="dataset") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UserError(f"dataset {path} is not a readable CSV: {reason}", field="dataset") from exc
    return frame, digest.hexdigest()


def load_dataset(spec: str, target: str | None = None) -> Dataset:
    """A shipped set by name, or a CSV file by path; the target column must exist."""
    if spec in SHIPPED:
        frame = _load_shipped(spec)
        digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
        name, default_target = spec, "target"
    elif spec.lower().endswith(".csv") or Path(spec).exists():
        frame, digest = _read_csv(Path(spec))
        name = spec
        default_target = "target" if "target" in frame.columns else str(frame.columns[-1])
    else:
        raise UserError(
            f"unknown dataset {spec!r}: use one of {', '.join(SHIPPED)} or a path to a .csv file",
            field="dataset",
        )
    if len(frame.columns) < 2:
        raise UserError(
            f"dataset {name} needs a target and at least one feature column", field="dataset"
        )
    frame.columns = [str(c) for c in frame.columns]
    if len(set(frame.columns)) != len(frame.columns):
        raise UserError(f"dataset {name} has duplicate column names", field="dataset")
    chosen = target or default_target
    if chosen not in frame.columns:
        raise UserError(
            f"column {chosen!r} is not in dataset {name} (columns: {', '.join(frame.columns)})",
            field="target",
        )
    frame = frame.dropna(subset=[chosen]).reset_index(drop=True)
    if len(frame) < 10:
        raise UserError(
            f"dataset {name} has {len(frame)} labelled rows; at least 10 are needed",
            field="dataset",
        )
    return Dataset(name=name, frame=frame, target=chosen, sha256=digest)


def model_name_for(dataset: str, model: str) -> str:
    """A BentoML model name (lowercase, digits, '-', '_', '.') for a data set and algorithm."""
    stem = Path(dataset).stem if dataset not in SHIPPED else dataset
    return f"{_snake(stem)[:60] or 'dataset'}-{model}"

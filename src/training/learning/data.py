"""Data sets: the ones scikit-learn ships and CSV files; their schema and fingerprint."""

from __future__ import annotations

import functools
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import UserError
from training.learning import uploads
from training.learning.columns import DatasetMeta, column_type, describe
from training.serving.features import Feature, FeatureSchema
from training.store.records import DatasetInfo

if TYPE_CHECKING:
    import pandas as pd

SHIPPED = ("iris", "wine", "breast_cancer", "diabetes", "digits")


@dataclass(frozen=True)
class Dataset:
    name: str
    frame: pd.DataFrame
    target: str
    sha256: str
    meta: DatasetMeta

    @property
    def feature_names(self) -> list[str]:
        return [c for c in self.frame.columns if c != self.target]

    def feature_schema(self) -> FeatureSchema:
        features: list[Feature] = []
        for name in self.feature_names:
            column = self.frame[name]
            ftype = column_type(column)
            if ftype == "number":
                present = column.dropna()
                features.append(
                    Feature(
                        name=name,
                        type="number",
                        minimum=float(present.min()) if len(present) else None,
                        maximum=float(present.max()) if len(present) else None,
                    )
                )
            elif ftype == "string":
                cats = sorted(str(v) for v in column.dropna().unique())
                features.append(Feature(name=name, type="string", categories=tuple(cats)))
            else:
                features.append(Feature(name=name, type=ftype))
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
    if not path.is_file():
        raise UserError(f"dataset file not found: {path}", field="dataset")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return _parse_csv(path, str(path)), digest.hexdigest()


def _parse_csv(source: Path | io.BytesIO, name: str) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_csv(source)
    except pd.errors.EmptyDataError as exc:
        raise UserError(f"dataset {name} is empty", field="dataset") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UserError(f"dataset {name} is not a readable CSV: {reason}", field="dataset") from exc


def read_frame(spec: str) -> tuple[str, pd.DataFrame, str]:
    """(name, frame, sha256) of a shipped set, an uploaded data set id or a CSV path."""
    if spec in SHIPPED:
        frame = _load_shipped(spec)
        return spec, frame, hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
    if uploads.is_dataset_id(spec):
        frame, digest = _read_csv(uploads.upload_path(spec))
        return spec, frame, digest
    if spec.lower().endswith(".csv") or Path(spec).exists():
        frame, digest = _read_csv(Path(spec))
        return spec, frame, digest
    raise UserError(
        f"unknown dataset {spec!r}: use one of {', '.join(SHIPPED)}, an uploaded dataset id "
        "or a path to a .csv file",
        field="dataset",
    )


def _checked_frame(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    frame.columns = [str(c) for c in frame.columns]
    if len(frame.columns) < 2:
        raise UserError(
            f"dataset {name} needs a target and at least one feature column", field="dataset"
        )
    if len(set(frame.columns)) != len(frame.columns):
        raise UserError(f"dataset {name} has duplicate column names", field="dataset")
    return frame


def load_dataset(spec: str, target: str | None = None) -> Dataset:
    """A shipped set, an upload or a CSV, its target checked and unlabelled rows dropped."""
    return _dataset(*read_frame(spec), target)


def _dataset(name: str, frame: pd.DataFrame, digest: str, target: str | None) -> Dataset:
    frame = _checked_frame(name, frame)
    meta = describe(name, frame, digest)
    chosen = meta.resolve_target(target).name
    frame = frame.dropna(subset=[chosen]).reset_index(drop=True)
    return Dataset(name=name, frame=frame, target=chosen, sha256=digest, meta=meta)


@dataclass(frozen=True)
class DatasetSource:
    """A data set as it travels to a worker that has no data folder: a shipped set by name,
    anything else as its CSV bytes with their sha256 (checked again where they arrive)."""

    name: str
    csv: bytes | None = None
    sha256: str | None = None


def source_of(spec: str) -> DatasetSource:
    """What to send a worker for this data set (an upload or a CSV path is read whole)."""
    if spec in SHIPPED:
        return DatasetSource(spec)
    path = uploads.upload_path(spec) if uploads.is_dataset_id(spec) else Path(spec)
    if not path.is_file():
        raise UserError(f"dataset file not found: {spec}", field="dataset")
    data = path.read_bytes()
    return DatasetSource(spec, data, hashlib.sha256(data).hexdigest())


def load_source(source: DatasetSource, target: str | None = None) -> Dataset:
    """The data set a worker was sent, as ``load_dataset`` would load it at its origin."""
    if source.csv is None:
        return load_dataset(source.name, target)
    digest = hashlib.sha256(source.csv).hexdigest()
    if digest != source.sha256:
        raise UserError(f"dataset {source.name} arrived damaged (sha256 {digest[:12]}...)")
    frame = _parse_csv(io.BytesIO(source.csv), source.name)
    return _dataset(source.name, frame, digest, target)


@functools.cache
def _shipped_meta(name: str) -> DatasetMeta:
    name, frame, digest = read_frame(name)
    return describe(name, frame, digest)


def dataset_meta(spec: str) -> DatasetMeta:
    """The columns of a data set without loading it where that can be avoided (the web API
    checks a request against this): shipped sets are described once, uploads carry theirs."""
    if spec in SHIPPED:
        return _shipped_meta(spec)
    if uploads.is_dataset_id(spec):
        return uploads.read_meta(spec)
    name, frame, digest = read_frame(spec)
    return describe(name, _checked_frame(name, frame), digest)


def model_name_for(dataset: str, model: str) -> str:
    """A BentoML model name (lowercase, digits, '-', '_', '.') for a data set and algorithm."""
    stem = Path(dataset).stem if dataset not in SHIPPED else dataset
    return f"{_snake(stem)[:60] or 'dataset'}-{model}"

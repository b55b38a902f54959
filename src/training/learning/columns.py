"""What a data set's columns are, without its rows: the description requests are checked against.

Shipped sets are described once per process, uploads carry their description beside the
file, so the training API checks a request without loading the data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from training.errors import UserError
from training.serving.features import FeatureType

if TYPE_CHECKING:
    import pandas as pd

Task = Literal["classification", "regression"]
# Integer targets with at most this many distinct values are taken for class labels.
MAX_INTEGER_CLASSES = 20
MIN_ROWS = 10
TARGET_MAX = 200  # the run store's column


class ColumnMeta(BaseModel):
    """One column as validation needs it, without the data: type, distinct and missing counts."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: FeatureType
    kind: str  # numpy dtype kind: i, u, f, b, O, ...
    distinct: int
    missing: int
    integral: bool  # every present value is a whole number


class DatasetMeta(BaseModel):
    """What a request is checked against: the data set's columns, not its rows."""

    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str
    rows: int
    columns: tuple[ColumnMeta, ...]

    def column(self, name: str) -> ColumnMeta | None:
        return next((c for c in self.columns if c.name == name), None)

    def default_target(self) -> str:
        return "target" if self.column("target") else self.columns[-1].name

    def resolve_target(self, requested: str | None) -> ColumnMeta:
        name = requested or self.default_target()
        if len(name) > TARGET_MAX:
            raise UserError(
                f"target column names are at most {TARGET_MAX} characters", field="target"
            )
        column = self.column(name)
        if column is None:
            known = ", ".join(c.name for c in self.columns)
            raise UserError(
                f"column {name!r} is not in dataset {self.name} (columns: {known})", field="target"
            )
        labelled = self.rows - column.missing
        if labelled < MIN_ROWS:
            raise UserError(
                f"dataset {self.name} has {labelled} labelled rows; at least {MIN_ROWS} are needed",
                field="dataset",
            )
        return column

    def infer_task(self, target: ColumnMeta) -> Task:
        """Text, booleans and whole numbers with few distinct values are class labels."""
        if target.type != "number":
            return "classification"
        if target.integral and target.distinct <= MAX_INTEGER_CLASSES:
            return "classification"
        return "regression"


def describe(name: str, frame: pd.DataFrame, sha256: str) -> DatasetMeta:
    columns = []
    for label in frame.columns:
        column = frame[label]
        present = column.dropna()
        kind = column.dtype.kind
        integral = kind in "iub" or (kind == "f" and bool((present == present.round()).all()))
        columns.append(
            ColumnMeta(
                name=str(label),
                type=column_type(column),
                kind=kind,
                distinct=int(present.nunique()),
                missing=int(len(column) - len(present)),
                integral=integral,
            )
        )
    return DatasetMeta(name=name, sha256=sha256, rows=len(frame), columns=tuple(columns))


def column_type(column: pd.Series[Any]) -> FeatureType:
    kind = column.dtype.kind
    if kind == "b":
        return "boolean"
    if kind in "iuf":
        return "number"
    present = column.dropna()
    # pandas reads True/False with gaps as an object column of Python bools.
    if len(present) and all(isinstance(v, bool) for v in present):
        return "boolean"
    return "string"

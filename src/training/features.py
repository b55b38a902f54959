"""The feature schema a model is trained with, and how raw rows become its input matrix.

Training records the schema in the model's metadata; the prediction service reads it back from
the model store and validates every row against it, so a bento needs no run database. This
module is imported by the service: it must stay light (stdlib and numpy only).

Layout of the matrix, the same in training and serving: one column per feature in schema
order; float64 when every feature is numeric, otherwise an object array; a missing value is
NaN in both (the pipeline imputes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FeatureType = Literal["number", "boolean", "string"]


@dataclass(frozen=True)
class RowError:
    """One reason a row was refused: where (row, feature) and why."""

    row: int | None
    feature: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "feature": self.feature, "reason": self.reason}


class InvalidRows(ValueError):
    def __init__(self, errors: list[RowError]) -> None:
        super().__init__("; ".join(e.reason for e in errors[:3]))
        self.errors = errors


@dataclass(frozen=True)
class Feature:
    name: str
    type: FeatureType
    categories: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.categories is not None:
            data["categories"] = list(self.categories)
        if self.type == "number":
            data["minimum"], data["maximum"] = self.minimum, self.maximum
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Feature:
        categories = data.get("categories")
        return cls(
            name=str(data["name"]),
            type=data["type"],
            categories=tuple(categories) if categories is not None else None,
            minimum=data.get("minimum"),
            maximum=data.get("maximum"),
        )


# Values a JSON decoder can hand us, checked per type; bool is an int in Python, so excluded.
def _number(value: Any) -> float | str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {_json_type(value)}"
    number = float(value)
    if not math.isfinite(number):
        return "expected a finite number"
    return number


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@dataclass(frozen=True)
class FeatureSchema:
    features: tuple[Feature, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric(self) -> bool:
        return all(f.type != "string" for f in self.features)

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.features]

    @classmethod
    def from_json(cls, data: list[dict[str, Any]]) -> FeatureSchema:
        return cls(tuple(Feature.from_json(item) for item in data))

    def matrix(self, rows: list[dict[str, Any]], max_errors: int = 20) -> npt.NDArray[Any]:
        """Validate JSON rows and lay them out for the pipeline; InvalidRows names each problem.

        A feature that is present with ``null`` counts as missing and is imputed; a feature that
        is absent is an error, so a misspelt name never passes silently as a missing value.
        """
        errors: list[RowError] = []
        if self.numeric:
            out: npt.NDArray[Any] = np.empty((len(rows), len(self.features)), dtype=np.float64)
        else:
            out = np.empty((len(rows), len(self.features)), dtype=object)
        index = {f.name: j for j, f in enumerate(self.features)}
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                errors.append(
                    RowError(i, None, f"expected an object of features, got {_json_type(row)}")
                )
                continue
            if len(row) != len(index) or not row.keys() <= index.keys():
                for name in row.keys() - index.keys():
                    errors.append(RowError(i, name, "unknown feature"))
                for name in index.keys() - row.keys():
                    errors.append(
                        RowError(i, name, "missing feature (send null for an unknown value)")
                    )
            for name, value in row.items():
                j = index.get(name)
                if j is None:
                    continue
                feature = self.features[j]
                if value is None:
                    out[i, j] = np.nan
                    continue
                if feature.type == "number":
                    number = _number(value)
                    if isinstance(number, str):
                        errors.append(RowError(i, name, number))
                    else:
                        out[i, j] = number
                elif feature.type == "boolean":
                    if isinstance(value, bool):
                        out[i, j] = float(value)
                    else:
                        errors.append(
                            RowError(i, name, f"expected a boolean, got {_json_type(value)}")
                        )
                elif not isinstance(value, str):
                    errors.append(RowError(i, name, f"expected a string, got {_json_type(value)}"))
                elif feature.categories is not None and value not in feature.categories:
                    shown = ", ".join(feature.categories[:10])
                    more = ", ..." if len(feature.categories) > 10 else ""
                    errors.append(
                        RowError(
                            i, name, f"unknown category {value[:100]!r} (known: {shown}{more})"
                        )
                    )
                else:
                    out[i, j] = value
            if len(errors) >= max_errors:
                break
        if errors:
            raise InvalidRows(errors[:max_errors])
        return out

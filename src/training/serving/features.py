"""The feature schema a model is trained with, and how raw rows become its input matrix.

Training records the schema in the model's metadata; the prediction service reads it back from
the model store and validates every row against it, so a bento needs no run database. This
module is imported by the service: it must stay light (stdlib and pydantic; numpy only where
a matrix is made, so the process that merely supervises the workers never loads it).

Layout of the matrix, the same in training and serving: one column per feature in schema
order; float64 when every feature is numeric, otherwise an object array; a missing value is
NaN in both (the pipeline imputes it).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, cast

from pydantic import BaseModel, ConfigDict, Field, RootModel
from typing_extensions import TypedDict

if TYPE_CHECKING:
    import numpy.typing as npt

FeatureType = Literal["number", "boolean", "string"]


class Feature(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    type: FeatureType
    categories: tuple[str, ...] | None = Field(
        default=None, description="Text seen in training (text features)."
    )
    minimum: float | None = Field(default=None, description="Least value seen (numbers).")
    maximum: float | None = Field(default=None, description="Greatest value seen (numbers).")


class FeatureSchema(RootModel[tuple[Feature, ...]]):
    """The features in input order; serialized as a plain list (model metadata, GET /model)."""

    model_config = ConfigDict(frozen=True)

    @property
    def features(self) -> tuple[Feature, ...]:
        return self.root

    @cached_property
    def names(self) -> list[str]:
        return [f.name for f in self.root]

    @cached_property
    def numeric(self) -> bool:
        return all(f.type != "string" for f in self.root)

    def row_type(self) -> type:
        """A TypedDict of one raw row, for pydantic: the request schema of the prediction API.

        Strict: numbers must be JSON numbers (no "1.5", no true), finite; booleans JSON
        booleans; text one of the categories seen in training. Every feature must be present;
        ``null`` stands for a missing value, which the pipeline imputes. Unknown keys are
        refused, so a misspelt name never passes silently as a missing value.
        """
        fields: dict[str, Any] = {}
        for f in self.root:
            value: Any
            if f.type == "number":
                value = Annotated[float, Field(allow_inf_nan=False)]
                extra = (
                    f" (seen in training: {f.minimum} to {f.maximum})"
                    if f.minimum is not None
                    else ""
                )
            elif f.type == "boolean":
                value, extra = bool, ""
            elif f.categories:
                value, extra = Literal[f.categories], ""
            else:
                value, extra = str, ""
            fields[f.name] = Annotated[
                Optional[value],  # noqa: UP045 - a runtime type expression, built dynamically
                Field(description=f"{f.type}{extra}; null when unknown"),
            ]
        row: Any = TypedDict("Row", fields)  # type: ignore[misc]  # built from data, by design
        setattr(row, "__pydantic_config__", ConfigDict(extra="forbid", strict=True))  # noqa: B010
        return cast(type, row)

    def sample_rows(self, n: int) -> list[dict[str, Any]]:
        """``n`` valid rows spread over what training saw (for timing the model at start)."""
        import numpy as np

        rng = np.random.default_rng(0)
        rows: list[dict[str, Any]] = [{} for _ in range(n)]
        for f in self.root:
            for i, row in enumerate(rows):
                if f.type == "number":
                    low = f.minimum if f.minimum is not None else 0.0
                    high = f.maximum if f.maximum is not None else 1.0
                    row[f.name] = float(rng.uniform(low, high)) if high > low else low
                elif f.type == "boolean":
                    row[f.name] = bool(i % 2)
                else:
                    row[f.name] = (f.categories or (None,))[i % len(f.categories or (None,))]
        return rows

    def to_matrix(self, rows: list[dict[str, Any]]) -> npt.NDArray[Any]:
        """Lay validated rows out for the pipeline (see the module docstring)."""
        import numpy as np  # loaded once; afterwards a dictionary lookup

        names = self.names
        if self.numeric:
            # None becomes NaN and booleans 1.0/0.0 in a float64 array.
            return np.array([[row[n] for n in names] for row in rows], dtype=np.float64)
        numeric = [f.type != "string" for f in self.root]
        return np.array(
            [
                [
                    np.nan if row[n] is None else (float(row[n]) if is_num else row[n])
                    for n, is_num in zip(names, numeric, strict=True)
                ]
                for row in rows
            ],
            dtype=object,
        )

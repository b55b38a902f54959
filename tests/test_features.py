"""Raw JSON rows against a feature schema: the matrix, and an error naming row, feature, reason."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.features import Feature, FeatureSchema, InvalidRows

NUMERIC = FeatureSchema((Feature("a", "number"), Feature("b", "number")))
MIXED = FeatureSchema(
    (
        Feature("size", "number"),
        Feature("colour", "string", categories=("blue", "red")),
        Feature("ok", "boolean"),
    )
)


def test_numeric_rows_become_a_float_matrix_with_null_as_missing() -> None:
    matrix = NUMERIC.matrix([{"a": 1, "b": 2.5}, {"b": None, "a": 3}])
    assert matrix.dtype == np.float64
    assert matrix[0].tolist() == [1.0, 2.5]
    assert matrix[1, 0] == 3.0 and math.isnan(matrix[1, 1])


def test_mixed_rows_become_an_object_matrix_in_schema_order() -> None:
    matrix = MIXED.matrix([{"ok": True, "colour": "red", "size": 2}])
    assert matrix.dtype == object
    assert matrix[0].tolist() == [2.0, "red", 1.0]


@pytest.mark.parametrize(
    ("row", "feature", "reason"),
    [
        ({"a": 1}, "b", "missing feature"),
        ({"a": 1, "b": 2, "c": 3}, "c", "unknown feature"),
        ({"a": "1", "b": 2}, "a", "expected a number, got string"),
        ({"a": True, "b": 2}, "a", "expected a number, got boolean"),
        ({"a": float("inf"), "b": 2}, "a", "finite"),
        ({"a": [1], "b": 2}, "a", "got array"),
    ],
)
def test_each_bad_value_is_named(row: dict[str, object], feature: str, reason: str) -> None:
    with pytest.raises(InvalidRows) as info:
        NUMERIC.matrix([{"a": 0, "b": 0}, row])
    [error] = info.value.errors
    assert (error.row, error.feature) == (1, feature)
    assert reason in error.reason


def test_unknown_category_and_wrong_types_in_mixed_rows() -> None:
    with pytest.raises(InvalidRows) as info:
        MIXED.matrix([{"size": 1, "colour": "green", "ok": "yes"}, "not an object"])
    reasons = [(e.row, e.feature, e.reason.split(" (")[0]) for e in info.value.errors]
    assert reasons == [
        (0, "colour", "unknown category 'green'"),
        (0, "ok", "expected a boolean, got string"),
        (1, None, "expected an object of features, got string"),
    ]


def test_schema_round_trips_through_json() -> None:
    assert FeatureSchema.from_json(MIXED.to_json()) == MIXED

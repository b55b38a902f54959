"""The feature schema: the request row type (strict, named errors) and the model matrix."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from training.serving.features import Feature, FeatureSchema

NUMERIC = FeatureSchema(
    (Feature(name="a", type="number", minimum=0.0, maximum=1.0), Feature(name="b", type="number"))
)
MIXED = FeatureSchema(
    (
        Feature(name="size", type="number"),
        Feature(name="colour", type="string", categories=("blue", "red")),
        Feature(name="ok", type="boolean"),
    )
)


def validate(schema: FeatureSchema, rows: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = TypeAdapter(list[schema.row_type()]).validate_python(rows)  # type: ignore[name-defined]
    return result


def errors(schema: FeatureSchema, rows: Any) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as info:
        validate(schema, rows)
    return [(*e["loc"], e["msg"]) for e in info.value.errors()]


def test_numeric_rows_become_a_float_matrix_with_null_as_missing() -> None:
    rows = validate(NUMERIC, [{"a": 1, "b": 2.5}, {"b": None, "a": 3}])
    matrix = NUMERIC.to_matrix(rows)
    assert matrix.dtype == np.float64
    assert matrix[0].tolist() == [1.0, 2.5]
    assert matrix[1, 0] == 3.0 and math.isnan(matrix[1, 1])


def test_mixed_rows_become_an_object_matrix_in_schema_order() -> None:
    matrix = MIXED.to_matrix(validate(MIXED, [{"ok": True, "colour": "red", "size": 2}]))
    assert matrix.dtype == object
    assert matrix[0].tolist() == [2.0, "red", 1.0]
    missing = MIXED.to_matrix(validate(MIXED, [{"ok": None, "colour": None, "size": None}]))
    assert all(math.isnan(v) for v in missing[0])


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"a": 1}, ("b", "Field required")),
        ({"a": 1, "b": 2, "c": 3}, ("c", "Extra inputs are not permitted")),
        ({"a": "1", "b": 2}, ("a", "Input should be a valid number")),
        ({"a": True, "b": 2}, ("a", "Input should be a valid number")),
        ({"a": float("inf"), "b": 2}, ("a", "Input should be a finite number")),
        ({"a": [1], "b": 2}, ("a", "Input should be a valid number")),
    ],
)
def test_each_bad_value_is_named_by_row_and_feature(
    row: dict[str, object], expected: tuple[str, str]
) -> None:
    assert errors(NUMERIC, [{"a": 0, "b": 0}, row]) == [(1, *expected)]


def test_unknown_category_and_wrong_types_in_mixed_rows() -> None:
    assert errors(MIXED, [{"size": 1, "colour": "green", "ok": "yes"}, "not an object"]) == [
        (0, "colour", "Input should be 'blue' or 'red'"),
        (0, "ok", "Input should be a valid boolean"),
        (1, "Input should be a valid dictionary"),
    ]


def test_the_row_schema_documents_features_in_order() -> None:
    schema = TypeAdapter(NUMERIC.row_type()).json_schema()
    assert list(schema["properties"]) == ["a", "b"] and schema["additionalProperties"] is False
    assert "seen in training: 0.0 to 1.0" in schema["properties"]["a"]["description"]


def test_schema_round_trips_through_json() -> None:
    assert FeatureSchema.model_validate(MIXED.model_dump(mode="json")) == MIXED
    assert FeatureSchema.model_validate_json(MIXED.model_dump_json()) == MIXED

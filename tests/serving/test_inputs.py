"""Open Inference Protocol inputs as /predict's rows, in process: the same rules as /predict's row
type, its words for each problem, and a fast path that never lets through what the row type
would refuse."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError

from training.serving.features import Feature, FeatureSchema
from training.serving.inputs import Inputs
from training.serving.tensors import Tensor, TensorError

SCHEMA = FeatureSchema(
    (
        Feature(name="size", type="number", minimum=0.0, maximum=10.0),
        Feature(name="colour", type="string", categories=("blue", "green", "red")),
        Feature(name="indoor", type="boolean"),
        Feature(name="note", type="string"),
    )
)
DATATYPES = {"size": "FP64", "colour": "BYTES", "indoor": "BOOL", "note": "BYTES"}


def instances(schema: FeatureSchema, limit: int = 5) -> Any:
    """/predict's request rows for ``schema`` (as Answers makes them)."""
    return Annotated[list[schema.row_type()], Field(min_length=1, max_length=limit)]  # type: ignore[misc]


INPUTS = Inputs(SCHEMA, instances(SCHEMA), max_rows=5)
ROW_TYPE: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(instances(SCHEMA))


def tensors(columns: dict[str, list[Any]], shape: tuple[int, ...] | None = None) -> list[Tensor]:
    return [
        Tensor(name, DATATYPES[name], shape or (len(values),), values, index)
        for index, (name, values) in enumerate(columns.items())
    ]


VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.sampled_from(["red", "blue", "purple", ""])
)


#: Values a cell may be changed to: each kind of problem, and what passes anywhere.
CHANGES = st.sampled_from(
    [None, True, 0, 1.5, float("nan"), float("-inf"), 2**1100, "purple", "", "red", [1.0], {}]
)
CLEAN = {
    "size": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**63),
    "colour": st.sampled_from(["blue", "green", "red"]),
    "indoor": st.booleans(),
    "note": st.text(max_size=3),
}
#: Valid rows, then a few cells changed to anything at all.
ROWS = st.tuples(
    st.lists(st.fixed_dictionaries(CLEAN), min_size=1, max_size=5),
    st.lists(st.tuples(st.integers(0, 4), st.sampled_from(list(CLEAN)), CHANGES), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(case=ROWS)
def test_inputs_answer_exactly_as_the_row_type_does(
    case: tuple[list[dict[str, Any]], list[tuple[int, str, Any]]],
) -> None:
    rows, changes = case
    for row, feature, value in changes:
        rows[row % len(rows)][feature] = value
    columns = {name: [row[name] for row in rows] for name in DATATYPES}
    try:
        expected: Any = ROW_TYPE.validate_python(rows)
    except ValidationError as exc:
        expected = sorted((e["loc"][0], e["loc"][1], e["msg"]) for e in exc.errors())
    try:
        # An int stays an int where the row type makes it a float; the model's matrix is
        # float64 either way (FeatureSchema.to_matrix).
        got: Any = [
            {**row, "size": None if row["size"] is None else float(row["size"])}
            for row in INPUTS.rows(tensors(columns))
        ]
    except TensorError as exc:
        got = sorted((p["row"], p["feature"], p["reason"]) for p in exc.detail)
        assert all(
            p["field"] == f"inputs.{list(DATATYPES).index(p['feature'])}.data.{p['row']}"
            for p in exc.detail
        )
    assert got == expected


def test_a_problem_names_its_row_feature_and_element_in_the_text() -> None:
    columns = {
        "size": [1.0, float("inf")],
        "colour": ["red", "mauve"],
        "indoor": [True, 1],
        "note": ["", ""],
    }
    with pytest.raises(TensorError) as refused:
        INPUTS.rows(tensors(columns))
    text = str(refused.value)
    assert text.startswith("invalid request: 3 problems: row 1, feature 'size' (inputs.0.data.1): ")
    assert (
        "row 1, feature 'colour' (inputs.1.data.1): Input should be 'blue', 'green' or 'red'"
        in text
    )
    assert "row 1, feature 'indoor' (inputs.2.data.1): Input should be a valid boolean" in text


def test_text_arrives_as_utf8_bytes_and_a_feature_may_be_n_by_1() -> None:
    columns = {"size": [2.5], "colour": [b"red"], "indoor": [False], "note": ["gr\u00fcn".encode()]}
    [row] = INPUTS.rows(tensors(columns, shape=(1, 1)))
    assert row == {"size": 2.5, "colour": "red", "indoor": False, "note": "gr\u00fcn"}
    columns["note"] = [b"\xff"]
    with pytest.raises(
        TensorError, match=r"feature 'note' \(inputs.3.data.0\): Input should be UTF-8"
    ):
        INPUTS.rows(tensors(columns))


def test_the_matrix_form_needs_every_feature_to_be_a_number() -> None:
    numbers = FeatureSchema((Feature(name="a", type="number"), Feature(name="b", type="number")))
    inputs = Inputs(numbers, instances(numbers), max_rows=5)
    matrix = Tensor("x", "INT32", (2, 2), [1, 2, 3, 4], 0)
    assert inputs.rows([matrix]) == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    with pytest.raises(
        TensorError, match=r"row 1, feature 'b' \(inputs.0.data.3\): Input should be a finite"
    ):
        inputs.rows([Tensor("x", "FP64", (2, 2), [1.0, 2.0, 3.0, float("nan")], 0)])
    with pytest.raises(
        TensorError, match="colour, indoor, note are not; send one tensor per feature"
    ):
        INPUTS.rows([Tensor("x", "FP64", (1, 4), [1.0] * 4, 0)])
    with pytest.raises(
        TensorError, match="List should have at most 5 items after validation, not 6"
    ):
        inputs.rows([Tensor("x", "FP64", (6, 2), [1.0] * 12, 0)])

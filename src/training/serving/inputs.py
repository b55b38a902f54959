"""Open Inference Protocol inputs as the rows /predict takes, judged by /predict's rules.

Two forms of input, both laid out by the model's feature schema:
- one tensor per feature, named as the feature, shape ``[N]`` (or ``[N, 1]``), its datatype
  fitting the feature: a number any of FP16/BF16/FP32/FP64/INT*/UINT*, a boolean BOOL, text
  BYTES (UTF-8). This is what the model metadata lists;
- when every feature is a number, one ``[N, F]`` tensor of all of them in the schema's order,
  whatever its name.
The tensors become rows keyed by feature, and those rows are validated by the very row type
/predict uses (the same pydantic rules, limits and messages: finite numbers, booleans as
booleans, text among the categories seen in training, 1 to PREDICT_MAX_ROWS rows). JSON's
``null`` is a missing value, as on /predict; NaN and infinities are refused as they are there.
Each problem names its row, feature and the tensor element it came from
(``inputs.<i>.data.<k>``), and the error's text says them all, since protocol clients show
only the ``error`` string.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import repeat
from typing import Any

from pydantic import TypeAdapter, ValidationError

from training.serving.features import FeatureSchema
from training.serving.tensors import NUMBERS, Tensor, TensorError

Row = dict[str, Any]
Where = Callable[[int, str], str]
#: Problems spelled out in an error's text; the detail lists every one.
SPELLED_OUT = 10
FITTING = {"number": "FP64, FP32 or an INT/UINT type", "boolean": "BOOL", "string": "BYTES"}
KINDS = {"number": "a number", "boolean": "a boolean", "string": "text"}
ACCEPTS = {"number": NUMBERS, "boolean": frozenset({"BOOL"}), "string": frozenset({"BYTES"})}


def problem(row: int | None, feature: str | None, where: str | None, reason: str) -> dict[str, Any]:
    return {"row": row, "feature": feature, "field": where, "reason": reason}


def refusal(problems: list[dict[str, Any]]) -> TensorError:
    """One error whose text names each problem (the first few) and whose detail lists all."""
    said = []
    for p in problems[:SPELLED_OUT]:
        place = (
            f"row {p['row']}, feature '{p['feature']}' ({p['field']}): "
            if p["row"] is not None
            else ""
        )
        said.append(place + p["reason"])
    more = f"; and {len(problems) - SPELLED_OUT} more" if len(problems) > SPELLED_OUT else ""
    count = len(problems)
    head = f"invalid request: {count} problem{'s' if count != 1 else ''}: "
    return TensorError(head + "; ".join(said) + more, problems)


class Inputs:
    """The served model's inputs: tensors in, validated rows out."""

    def __init__(self, schema: FeatureSchema, instances: Any, max_rows: int) -> None:
        self.names = schema.names
        self.kinds = {f.name: f.type for f in schema.features}
        self.all_numbers = all(f.type == "number" for f in schema.features)
        self.max_rows = max_rows
        self._rows: TypeAdapter[list[Row]] = TypeAdapter(instances)
        # The checks of the fast path, one per group of columns judged alike: all the numbers
        # at once, all the booleans, all free text, each set of categories on its own.
        groups: dict[tuple[str, tuple[str, ...] | None], list[int]] = {}
        for i, f in enumerate(schema.features):
            groups.setdefault((f.type, f.categories or None), []).append(i)
        self._clean = [(_clean_check(kind, cats), idx) for (kind, cats), idx in groups.items()]

    def metadata(self) -> list[dict[str, Any]]:
        """The inputs the model metadata lists: one tensor per feature."""
        datatype = {"number": "FP64", "boolean": "BOOL", "string": "BYTES"}
        return [{"name": n, "datatype": datatype[self.kinds[n]], "shape": [-1]} for n in self.names]

    def rows(self, tensors: list[Tensor]) -> list[Row]:
        one = tensors[0]
        # The [N, F] form, whatever its name (but a feature's own [N, 1] tensor is a column).
        if (
            len(tensors) == 1
            and len(one.shape) == 2
            and (one.name not in self.kinds or one.shape[1] != 1)
        ):
            columns, where = self._from_matrix(one)
        else:
            columns, where = self._from_columns(tensors)
        # Columns of one length by now; map, not a comprehension: ~30% less per row.
        rows: list[Row] = list(map(dict, map(zip, repeat(self.names), zip(*columns, strict=True))))
        for clean, indices in self._clean:
            if not clean([columns[i] for i in indices]):
                break
        else:
            return rows  # valid as they are: what the row type would accept unchanged
        try:  # the row type's own judgement, and its words for each problem
            return self._rows.validate_python(rows)
        except ValidationError as exc:
            raise self._problems(exc, where) from None

    def _count(self, n: int) -> None:
        """/predict's rule on the number of rows, said before any row is made."""
        if n < 1:
            reason = f"List should have at least 1 item after validation, not {n}"
        elif n > self.max_rows:
            reason = f"List should have at most {self.max_rows} items after validation, not {n}"
        else:
            return
        raise refusal([problem(None, None, None, reason)])

    def _from_matrix(self, tensor: Tensor) -> tuple[list[list[Any]], Where]:
        what = f"input '{tensor.name}'"
        if not self.all_numbers:
            others = [n for n in self.names if self.kinds[n] != "number"]
            raise TensorError(
                f"{what}: one [N, F] tensor needs every feature to be a number, and "
                f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} not; send one "
                "tensor per feature"
            )
        if tensor.datatype not in NUMBERS:
            raise TensorError(
                f"{what} is {tensor.datatype}; send the features as {FITTING['number']}"
            )
        n, width = tensor.shape
        if width != len(self.names):
            raise TensorError(
                f"{what} has shape {list(tensor.shape)}; the model has {len(self.names)} "
                f"features ({', '.join(self.names)}): send [N, {len(self.names)}]"
            )
        self._count(n)
        values = tensor.values
        columns = [values[c::width] for c in range(width)]
        index, names = tensor.index, self.names
        return (
            columns,
            lambda row, feature: f"inputs.{index}.data.{row * width + names.index(feature)}",
        )

    def _from_columns(self, tensors: list[Tensor]) -> tuple[list[list[Any]], Where]:
        given: dict[str, Tensor] = {}
        for tensor in tensors:
            self._check_column(tensor, given)
            given[tensor.name] = tensor
        missing = [n for n in self.names if n not in given]
        if missing:
            raise TensorError(
                f"missing input{'s' if len(missing) > 1 else ''} {', '.join(missing)}: send "
                "one tensor per feature"
            )
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            said = ", ".join(f"{t.name} {t.shape[0]}" for t in tensors)
            raise TensorError(f"the inputs have different numbers of rows: {said}")
        self._count(n)
        columns = [
            t.values if t.datatype != "BYTES" else self._texts(t)
            for t in map(given.__getitem__, self.names)
        ]
        return columns, lambda row, feature: f"inputs.{given[feature].index}.data.{row}"

    def _check_column(self, tensor: Tensor, given: dict[str, Tensor]) -> None:
        kind = self.kinds.get(tensor.name)
        if kind is None:
            forms = f"one tensor per feature ({', '.join(self.names)})"
            if self.all_numbers:
                forms += f", or one [N, {len(self.names)}] tensor of them all"
            raise TensorError(f"unknown input '{tensor.name}'; the model takes {forms}")
        if tensor.name in given:
            raise TensorError(f"input '{tensor.name}' is given twice")
        if tensor.datatype not in ACCEPTS[kind]:
            raise TensorError(
                f"input '{tensor.name}' is {tensor.datatype}, but the feature is {KINDS[kind]}: "
                f"send {FITTING[kind]}"
            )
        if len(tensor.shape) not in (1, 2) or tensor.shape[1:] not in ((), (1,)):
            raise TensorError(
                f"input '{tensor.name}' has shape {list(tensor.shape)}; a feature's tensor is "
                "[N] (or [N, 1])"
            )

    def _texts(self, tensor: Tensor) -> list[Any]:
        """A BYTES column's values as text (UTF-8)."""
        values: list[Any] = []
        bad: list[dict[str, Any]] = []
        for row, value in enumerate(tensor.values):
            text = value
            if isinstance(value, bytes):
                try:
                    text = value.decode()
                except UnicodeDecodeError:
                    where = f"inputs.{tensor.index}.data.{row}"
                    bad.append(problem(row, tensor.name, where, "Input should be UTF-8 text"))
            values.append(text)
        if bad:
            raise refusal(bad)
        return values

    def _problems(self, exc: ValidationError, where: Where) -> TensorError:
        found = []
        for error in exc.errors(include_url=False, include_context=False, include_input=False):
            loc = error["loc"]
            if len(loc) >= 2 and isinstance(loc[0], int) and isinstance(loc[1], str):
                row, feature = loc[0], loc[1]
                found.append(problem(row, feature, where(row, feature), error["msg"]))
            else:
                found.append(problem(None, None, None, error["msg"]))
        return refusal(found)


_NUMBERS, _BOOLEANS, _TEXTS = frozenset({float, int}), frozenset({bool}), frozenset({str})


def _types(columns: list[list[Any]]) -> set[type]:
    return set().union(*(map(type, column) for column in columns))


def _clean_check(
    kind: str, categories: tuple[str, ...] | None
) -> Callable[[list[list[Any]]], bool]:
    """A check of a group of columns that says yes only to values the row type accepts as
    they are (and no to anything else, which the row type then judges and words): finite
    floats or ints, booleans, text among the categories. It spares the row type's per-row
    work on the common case. A missing value (None) is left to the row type."""
    if kind == "number":

        def numbers(columns: list[list[Any]]) -> bool:
            if not _types(columns) <= _NUMBERS:
                return False
            try:
                return all(all(map(math.isfinite, column)) for column in columns)
            except OverflowError:  # an int too large for a float
                return False

        return numbers
    if kind == "boolean":
        return lambda columns: _types(columns) <= _BOOLEANS
    if categories:
        known = frozenset(categories)
        return lambda columns: _types(columns) <= _TEXTS and known.issuperset(*columns)
    return lambda columns: _types(columns) <= _TEXTS

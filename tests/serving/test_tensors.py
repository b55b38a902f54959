"""The Open Inference Protocol's wire format in process: what tritonclient writes we read, what
we write tritonclient reads, and every bound a malformed body can hit is a clear refusal."""

from __future__ import annotations

import json
import struct
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import np_to_triton_dtype

from training.serving.tensors import Output, TensorError, encode, header_length, members, read

ARRAYS = [
    np.array([1.5, -2.25, 0.0], dtype=np.float64),
    np.array([1.5, -2.25, 0.0], dtype=np.float32),
    np.array([1.5, -2.25, 0.0], dtype=np.float16),
    np.array([1.5, -2.25, 0.0], dtype=ml_dtypes.bfloat16),
    np.array([-3, 0, 2**40], dtype=np.int64),
    np.array([-3, 0, 7], dtype=np.int8),
    np.array([3, 0, 2**31], dtype=np.uint32),
    np.array([True, False, True]),
    np.array([b"red", b"", "gr\u00fcn".encode()], dtype=object),
]


def tritonclient_body(arrays: dict[str, np.ndarray], binary: bool) -> tuple[bytes, int | None]:
    inputs = []
    for name, array in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, request_id="r1")
    return body, json_size


# tritonclient sends BF16 as binary data only.
CASES = [
    pytest.param(a, binary, id=f"{np_to_triton_dtype(a.dtype)}-{'binary' if binary else 'json'}")
    for a in ARRAYS
    for binary in (True, False)
    if binary or a.dtype != ml_dtypes.bfloat16
]


@pytest.mark.parametrize(("array", "binary"), CASES)
def test_reads_what_tritonclient_writes(array: np.ndarray, binary: bool) -> None:
    body, size = tritonclient_body({"x": array, "y": array.reshape(3, 1)}, binary)
    assert (size is not None) == binary
    request, tensors = read(body, size)
    assert request["id"] == "r1" and [t.name for t in tensors] == ["x", "y"]
    assert tensors[1].shape == (3, 1) and tensors[1].index == 1
    expected = array.tolist()
    if array.dtype == object:
        # Binary BYTES stay bytes (the reader decodes text); tritonclient's JSON sends str.
        expected = [v if binary else v.decode() for v in expected]
    elif array.dtype in (np.float16, ml_dtypes.bfloat16):
        expected = [float(v) for v in array.astype(np.float32)]
    for tensor in tensors:
        assert tensor.datatype == np_to_triton_dtype(array.dtype)
        assert tensor.values == expected


def test_a_repeated_binary_header_reads_each_bodys_own_data() -> None:
    """The validated header is kept by its bytes: the data after it is read anew each time,
    and another header is not taken for it."""
    first, size = tritonclient_body({"x": np.array([1.0, 2.0, 3.0])}, True)
    second, same = tritonclient_body({"x": np.array([7.0, 8.0, 9.0])}, True)
    assert size == same and first[:size] == second[:size]  # one header, other data
    assert read(first, size)[1][0].values == [1.0, 2.0, 3.0]
    assert read(second, size)[1][0].values == [7.0, 8.0, 9.0]
    wider, wide = tritonclient_body({"x": np.array([1.0, 2.0, 3.0, 4.0])}, True)
    assert read(wider, wide)[1][0].values == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(TensorError, match="runs past the end"):
        read(second[:-8], size)  # the same header over too little data


def test_nested_json_data_is_read_flat_in_row_major_order() -> None:
    head = {
        "inputs": [{"name": "m", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, 4]]}]
    }
    _, [tensor] = read(json.dumps(head).encode(), None)
    assert tensor.values == [1, 2, 3, 4]


def test_tritonclient_reads_what_we_write() -> None:
    outputs = [
        Output("labels", "BYTES", [3], ["setosa", "virginica", "gr\u00fcn"]),
        Output("proba", "FP64", [3, 2], [0.25, 0.75, 1.0, 0.0, 0.5, 0.5], {"classes": '["a","b"]'}),
        Output("ints", "INT64", [3], [-1, 0, 2**40]),
        Output("flags", "BOOL", [3], [True, False, True]),
    ]
    for binary in (True, False):
        body, size = encode(members({"model_name": "m", "id": "7"}), [(o, binary) for o in outputs])
        assert (size is not None) == binary
        result = triton.InferResult.from_response_body(body, header_length=size)
        assert result.get_response()["id"] == "7"
        texts = result.as_numpy("labels").tolist()
        assert [t.decode() if binary else t for t in texts] == outputs[0].values
        assert result.as_numpy("proba").tolist() == [[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]]
        assert result.get_output("proba")["parameters"]["classes"] == '["a","b"]'
        assert result.as_numpy("ints").tolist() == outputs[2].values
        assert result.as_numpy("flags").tolist() == outputs[3].values


def binary_body(inputs: list[dict[str, Any]], parts: bytes) -> tuple[bytes, int]:
    head = json.dumps({"inputs": inputs}).encode()
    return head + parts, len(head)


def fp64(name: str, count: int, size: int | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "shape": [count],
        "datatype": "FP64",
        "parameters": {"binary_data_size": count * 8 if size is None else size},
    }


def strings(*texts: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(t)) + t for t in texts)


BYTES_INPUT = {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {}}


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (json.dumps({"inputs": [fp64("x", 2)]}).encode(), None, "declares binary_data_size but"),
        (*binary_body([fp64("x", 2)], b"\0" * 8), "runs past the end of the body"),
        (*binary_body([fp64("x", 2)], b"\0" * 24), "holds 8 bytes after the binary data"),
        (*binary_body([fp64("x", 2, 12)], b"\0" * 12), "take 16 bytes; binary_data_size says 12"),
        (*binary_body([fp64("x", 2, -1)], b""), "binary_data_size must be a byte count"),
        (
            *binary_body(
                [{**BYTES_INPUT, "parameters": {"binary_data_size": 10}}],
                struct.pack("<I", 100) + b"abcdef",
            ),
            "element 0 runs past its binary data",
        ),
        (
            *binary_body(
                [{**BYTES_INPUT, "shape": [1], "parameters": {"binary_data_size": 14}}],
                strings(b"abcd", b"ef"),
            ),
            "holds 1 BYTES elements in 8 of 14 bytes; shape says 1",
        ),
        (
            *binary_body([{**BYTES_INPUT, "parameters": {"binary_data_size": 4}}], strings(b"")),
            "2 BYTES elements need at least 8 bytes",
        ),
        (b'{"inputs": []}', None, "inputs: List should have at least 1 item"),
        (b'{"inputs": [', None, "invalid inference request: Invalid JSON"),
        (
            b'{"inputs": []}',
            5,
            "its first 5 bytes, as Inference-Header-Content-Length says): Invalid",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP64", "data": []}]}',
            None,
            "inputs.0.shape.0: Input should be greater than or equal to 0",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FLOAT", "data": [1, 2]}]}',
            None,
            "unknown datatype 'FLOAT'",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP64", "data": [1, 2]}]}',
            None,
            "shape [3] holds 3 elements, its data 2",
        ),
        (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP64"}]}', None, "has no data"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": 1}]}',
            None,
            "data must be an array",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1],'
            b' "parameters": {"shared_memory_region": "r"}}]}',
            None,
            "shared memory is not supported",
        ),
        (*binary_body([{**fp64("x", 1), "data": [1]}], b"\0" * 8), "both data and a binary_data"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}',
            500,
            "between 1 and the body's",
        ),
    ],
)
def test_each_malformed_body_is_refused_with_a_reason(
    body: bytes, length: int | None, message: str
) -> None:
    with pytest.raises(TensorError) as refused:
        read(body, length)
    assert message in str(refused.value)


def test_the_header_length_must_be_a_byte_count() -> None:
    assert header_length([(b"inference-header-content-length", b"42")]) == 42
    assert header_length([(b"content-length", b"42")]) is None
    for bad in (b"-1", b"4e2", b"", b"9" * 20):
        with pytest.raises(TensorError, match="must be a byte count"):
            header_length([(b"inference-header-content-length", bad)])

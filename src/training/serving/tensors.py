"""Tensors of the Open Inference Protocol (v2) on the wire: JSON, and Triton's binary extension.

A request is JSON (``{"id", "parameters", "inputs", "outputs"}``), or, with the binary tensor
extension (tritonclient's default), that JSON header followed by raw tensors: the header's
length in ``Inference-Header-Content-Length``, each binary input marked by its
``binary_data_size`` parameter, the raw parts in the order of the inputs, little-endian, row
major; a BOOL is one byte, a BYTES element a 4-byte length then its bytes. Answers are laid
out the same way when an output asks for ``binary_data`` (or the request for
``binary_data_output``).

Everything is bounded by the body it came in (which the HTTP layer caps at MAX_BODY_BYTES):
an input's element count must match its data exactly before anything is decoded, the binary
parts must add up to the body's tail to the byte, and a BYTES part is walked only within its
own declared size. No numpy here: ``struct`` decodes and encodes in C, and this module stays
importable in the process that only supervises the workers.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Annotated, Any, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

#: struct's code of each fixed-size datatype (BF16 is read through its 16 bits).
CODES = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "BF16": "H",
    "FP32": "f",
    "FP64": "d",
}
DATATYPES = (*CODES, "BYTES")
KNOWN = frozenset(DATATYPES)
WIDTHS = {datatype: struct.calcsize(code) for datatype, code in CODES.items()}
NUMBERS = frozenset(CODES) - {"BOOL"}
INTEGERS = frozenset(d for d in NUMBERS if "INT" in d)
#: Dimensions a tensor may have (ours are [N] or [N, F]; the bound keeps the check cheap).
MAX_RANK = 8
HEADER = b"inference-header-content-length"
_JSON = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps makes one per call


class TensorError(ValueError):
    """A request the protocol's rules refuse (a 400): the message says what and where;
    ``detail`` holds the problems as the prediction API lists them (row, feature, field,
    reason), when there are several."""

    def __init__(self, message: str, detail: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.detail = detail or []


# The request's JSON, as typed dicts (validated in one pass, about twice as fast as models).
_STRICT = ConfigDict(strict=True)


class RequestInput(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    name: Annotated[str, Field(min_length=1, max_length=256)]
    shape: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=MAX_RANK)]
    datatype: Annotated[str, Field(max_length=16)]
    parameters: NotRequired[dict[str, Any] | None]
    data: NotRequired[Any]


class RequestOutput(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    name: Annotated[str, Field(min_length=1, max_length=256)]
    parameters: NotRequired[dict[str, Any] | None]


class InferenceRequest(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    id: NotRequired[Annotated[str, Field(max_length=256)] | None]
    parameters: NotRequired[dict[str, Any] | None]
    inputs: Annotated[list[RequestInput], Field(min_length=1, max_length=1024)]
    outputs: NotRequired[Annotated[list[RequestOutput], Field(max_length=64)] | None]


_REQUEST = TypeAdapter(InferenceRequest)
#: Binary requests' JSON headers, validated, by their bytes. A client sending tensors of one
#: shape repeats its header byte for byte (tritonclient does: no id unless asked), so its
#: validation, a fifth of a single-row inference's own work, is done once. Read only, never
#: changed; bounded in entries and in size.
_binary_headers: dict[bytes, InferenceRequest] = {}
_HEADER_CACHE_ENTRIES = 64
_HEADER_CACHED_BYTES = 4096


def _remember(header: bytes, request: InferenceRequest) -> None:
    if len(_binary_headers) >= _HEADER_CACHE_ENTRIES:
        _binary_headers.pop(next(iter(_binary_headers)))  # the oldest
    _binary_headers[header] = request


@dataclass(slots=True)
class Tensor:
    """One input, decoded: its values flat in row-major order (None: JSON's null)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: list[Any]
    index: int  # its place in the request's inputs, for error fields ("inputs.2.data.7")


@dataclass
class Output:
    name: str
    datatype: str
    shape: list[int]
    values: list[Any]  # flat, row-major
    parameters: dict[str, Any] = field(default_factory=dict)


def header_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The request's Inference-Header-Content-Length, or None; a TensorError if malformed."""
    for name, value in headers:
        if name == HEADER:
            if not value.isdigit() or len(value) > 12:
                raise TensorError("Inference-Header-Content-Length must be a byte count")
            return int(value)
    return None


def read(body: bytes, length: int | None) -> tuple[InferenceRequest, list[Tensor]]:
    """The request and its inputs, decoded (see the module's docstring)."""
    if length is not None and not 0 < length <= len(body):
        raise TensorError(
            f"Inference-Header-Content-Length is {length}; it must be between 1 and the "
            f"body's {len(body)} bytes"
        )
    header, tail = (body, b"") if length is None else (body[:length], body[length:])
    request = _binary_headers.get(header) if length is not None else None
    if request is None:
        try:
            request = _REQUEST.validate_json(header)
        except ValidationError as exc:
            raise _malformed(exc, length) from None
        if length is not None and length <= _HEADER_CACHED_BYTES:
            _remember(header, request)
    tensors: list[Tensor] = []
    offset = 0
    for index, item in enumerate(request["inputs"]):
        values, offset = _values(item, tail, offset, length is not None)
        tensors.append(Tensor(item["name"], item["datatype"], tuple(item["shape"]), values, index))
    if offset != len(tail):
        raise TensorError(
            f"the body holds {len(tail) - offset} bytes after the binary data its inputs "
            "declare (binary_data_size)"
        )
    return request, tensors


def _malformed(exc: ValidationError, length: int | None) -> TensorError:
    problems: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"]) or None
        problems.append({"row": None, "feature": None, "field": where, "reason": error["msg"]})
    first = problems[0]
    where = f"{first['field']}: " if first["field"] else ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    if length is not None and first["reason"].startswith("Invalid JSON"):
        # Say where the header ended: a stale Inference-Header-Content-Length (tritonclient
        # adds it to the headers dict it is given) cuts the JSON short.
        where = (
            f"the JSON header (its first {length} bytes, as Inference-Header-Content-Length says): "
        )
    return TensorError(f"invalid inference request: {where}{first['reason']}{more}", problems)


def _values(item: RequestInput, tail: bytes, offset: int, binary: bool) -> tuple[list[Any], int]:
    """One input's flat values and where the next binary part starts."""
    datatype, data, parameters = item["datatype"], item.get("data"), item.get("parameters")
    if datatype not in KNOWN:
        raise TensorError(
            f"{_what(item)}: unknown datatype {datatype!r}; the protocol's are "
            + ", ".join(DATATYPES)
        )
    size = None
    if parameters:  # binary_data_size, perhaps shared memory (refused), or anything else
        size = parameters.get("binary_data_size")
        if (size is None or len(parameters) > 1) and any(
            k.startswith("shared_memory") for k in parameters
        ):
            raise TensorError(
                f"{_what(item)}: shared memory is not supported; send the data in the body"
            )
    count = math.prod(item["shape"])
    if size is None:
        if data is None:
            raise TensorError(f"{_what(item)} has no data (nor a binary_data_size)")
        values = data if type(data) is list and (not data or type(data[0]) is not list) else None
        values = _flat(data, item) if values is None else values  # nested, or not an array
        if len(values) != count:
            raise TensorError(
                f"{_what(item)}: shape {item['shape']} holds {count} elements, its data "
                f"{len(values)}"
            )
        return values, offset
    if data is not None:
        raise TensorError(f"{_what(item)} has both data and a binary_data_size")
    if not binary:
        raise TensorError(
            f"{_what(item)} declares binary_data_size but the request has no "
            "Inference-Header-Content-Length header"
        )
    if type(size) is not int or size < 0:
        raise TensorError(f"{_what(item)}: binary_data_size must be a byte count")
    if offset + size > len(tail):
        raise TensorError(
            f"{_what(item)}: binary_data_size {size} runs past the end of the body "
            f"({len(tail) - offset} bytes left)"
        )
    return _decode(datatype, count, tail[offset : offset + size], item), offset + size


def _what(item: RequestInput) -> str:
    """How an error names the input (made only when there is an error to say)."""
    return f"input '{item['name']}'"


def _flat(data: Any, item: RequestInput) -> list[Any]:
    """JSON data, nested or flat, as one flat list (row-major)."""
    if not isinstance(data, list):
        raise TensorError(f"{_what(item)}: data must be an array")
    if not data or not isinstance(data[0], list):
        # The usual case: flat (a list further in is no number, and the row type says so).
        return data
    return _flat_in_order(data, _what(item))


def _flat_in_order(data: list[Any], what: str, depth: int = 0) -> list[Any]:
    if depth >= MAX_RANK:
        raise TensorError(f"{what}: data is nested deeper than {MAX_RANK} levels")
    flat: list[Any] = []
    for value in data:
        if isinstance(value, list):
            flat.extend(_flat_in_order(value, what, depth + 1))
        else:
            flat.append(value)
    return flat


def _decode(datatype: str, count: int, raw: bytes, item: RequestInput) -> list[Any]:
    if datatype == "BYTES":
        return _decode_bytes(count, raw, _what(item))
    code, width = CODES[datatype], WIDTHS[datatype]
    if len(raw) != count * width:
        raise TensorError(
            f"{_what(item)}: {count} {datatype} elements take {count * width} bytes; "
            f"binary_data_size says {len(raw)}"
        )
    values = struct.unpack(f"<{count}{code}", raw)
    if datatype == "BF16":  # the upper half of an FP32
        widened = struct.pack(f"<{count}I", *(v << 16 for v in values))
        values = struct.unpack(f"<{count}f", widened)
    return list(values)


def _decode_bytes(count: int, raw: bytes, what: str) -> list[Any]:
    """Length-prefixed elements, walked within the part's own size only."""
    if count * 4 > len(raw):
        raise TensorError(f"{what}: {count} BYTES elements need at least {count * 4} bytes")
    values: list[Any] = []
    offset = 0
    while offset < len(raw) and len(values) < count:
        if offset + 4 > len(raw):
            break
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise TensorError(f"{what}: element {len(values)} runs past its binary data")
        values.append(raw[offset : offset + size])
        offset += size
    if len(values) != count or offset != len(raw):
        raise TensorError(
            f"{what}: its binary data holds {len(values)} BYTES elements in {offset} of "
            f"{len(raw)} bytes; shape says {count}"
        )
    return values


def encode(head: str, outputs: list[tuple[Output, bool]]) -> tuple[bytes, int | None]:
    """An answer's body, and its JSON header's length when binary parts follow it (the
    Inference-Header-Content-Length to send); ``outputs`` pairs each with "as binary".

    ``head`` is the answer's first members as JSON text with a trailing comma
    (``"model_name":"m","id":"7",``): written here as text, not through a dict, because
    encoding the whole header as one object cost more than the model call on a single row.
    Output names and datatypes are the service's own (plain ASCII)."""
    described: list[str] = []
    parts: list[bytes] = []
    for output, binary in outputs:
        shape = ",".join(map(str, output.shape))
        text = f'{{"name":"{output.name}","datatype":"{output.datatype}","shape":[{shape}]'
        parameters = output.parameters
        if binary:
            part = _encode(output)
            parts.append(part)
            parameters = {**parameters, "binary_data_size": len(part)}
        if parameters:
            text += f',"parameters":{_JSON.encode(parameters)}'
        if not binary:
            text += f',"data":{_JSON.encode(output.values)}'
        described.append(text + "}")
    header = f'{{{head}"outputs":[{",".join(described)}]}}'.encode()
    if not parts:
        return header, None
    return header + b"".join(parts), len(header)


def members(values: dict[str, Any]) -> str:
    """JSON members without their braces, and a trailing comma: the ``head`` of ``encode``."""
    return _JSON.encode(values)[1:-1] + ","


def _encode(output: Output) -> bytes:
    if output.datatype == "BYTES":
        texts = [str(v).encode() for v in output.values]
        return b"".join(struct.pack("<I", len(t)) + t for t in texts)
    return struct.pack(f"<{len(output.values)}{CODES[output.datatype]}", *output.values)

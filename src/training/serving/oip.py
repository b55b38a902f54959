"""The Open Inference Protocol (v2) REST routes, beside /predict on the same port.

    GET  /v2                                      server metadata (name, version, extensions)
    GET  /v2/health/live, /v2/health/ready        liveness, readiness
    GET  /v2/models/{name}[/versions/{version}]   model metadata: inputs, outputs
    GET  .../ready                                model readiness
    POST .../infer                                predictions

The model's name is the served tag's name and its version the tag's version; any other is a
404. ``ServiceHTTP`` answers these routes itself, as it answers /predict, so the same rules
hold around them: API keys (all but the health routes), MAX_BODY_BYTES, REQUEST_TIMEOUT_S,
the request id, metrics labelled by route (the route's template, never the path a client
wrote), the access line. An inference goes through ``Answers``' batchers like a /predict of
the same rows, so batching and PREDICT_MAX_ROWS hold too; its inputs are read by
``inputs`` (the feature schema's rules) from the wire format of ``tensors`` (JSON, or Triton's
binary tensor extension).

Outputs: ``predict`` ([N]; BYTES for text labels, else the labels' type; FP64 values for a
regressor) and, for a classifier, ``predict_proba`` (FP64 [N, C], the class order in its
``parameters.classes``, a JSON array as text since the protocol's parameters are scalars).

Errors keep the service's one shape, ``{"error", "detail", "request_id"}``: ``error`` is the
protocol's string (tritonclient and kserve's client read only that key, so it names every
problem itself), ``detail`` lists the problems as /predict does. 400 for a request the rules
refuse (a prediction the model cannot make included), 404 for another model, version or
route, 405 for another method, 503 until the model is loaded.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any

from training.serving.answers import Answers
from training.serving.card import Method
from training.serving.exchange import error_body
from training.serving.inputs import Inputs
from training.serving.predictor import PredictionError
from training.serving.tensors import (
    Output,
    RequestOutput,
    TensorError,
    encode,
    header_length,
    members,
    read,
)

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]
EXTENSIONS = ["binary_tensor_data"]
_JSON = (b"content-type", b"application/json")
_BINARY = (b"content-type", b"application/octet-stream")


@dataclass(frozen=True)
class Route:
    """A /v2 path, read: what it asks and of which model."""

    action: str  # server, live, ready, model, model_ready, infer, or unknown
    template: str | None  # the metrics label; None for health checks and unknown paths
    name: str | None = None
    version: str | None = None

    @property
    def keyed(self) -> bool:
        """Whether an API key is needed (when keys are required): all but health checks."""
        return self.action not in ("live", "ready")

    @property
    def method(self) -> str:
        return "POST" if self.action == "infer" else "GET"


_HEALTH = {"live": Route("live", None), "ready": Route("ready", None)}


def route(path: str) -> Route | None:
    """The protocol's route of ``path``; None for a path outside /v2."""
    if path != "/v2" and not path.startswith("/v2/"):
        return None
    return _read_route(path)


@functools.lru_cache(maxsize=256)  # the few paths clients repeat; a made-up one costs a read
def _read_route(path: str) -> Route:
    parts = path.split("/")[2:]
    if not parts:
        return Route("server", "/v2")
    if parts[0] == "health" and len(parts) == 2 and parts[1] in _HEALTH:
        return _HEALTH[parts[1]]
    if parts[0] != "models" or len(parts) < 2 or not parts[1]:
        return Route("unknown", None)
    name, rest, template = parts[1], parts[2:], "/v2/models/{name}"
    version = None
    if rest[:1] == ["versions"] and len(rest) >= 2 and rest[1]:
        version, rest, template = rest[1], rest[2:], template + "/versions/{version}"
    if not rest:
        return Route("model", template, name, version)
    if rest in (["ready"], ["infer"]):
        action = "model_ready" if rest == ["ready"] else "infer"
        return Route(action, f"{template}/{rest[0]}", name, version)
    return Route("unknown", None)


def _json(status: int, data: Any, headers: Headers) -> Answer:
    return status, [_JSON, *headers], json.dumps(data, separators=(",", ":")).encode()


class OpenInference:
    """The protocol's answers for the served model (see the module's docstring)."""

    def __init__(self, answers: Answers) -> None:
        card = answers.card
        self.answers = answers
        self.name, _, self.version = card.model_tag.partition(":")
        self.inputs = Inputs(card.features, answers.instances, answers.settings.predict_max_rows)
        self.model_headers = [h for h in answers.raw_headers if h[0] != b"content-type"]
        self.classes = json.dumps(card.classes, separators=(",", ":"))
        labels = {type(c) for c in card.classes}
        by_type = {str: "BYTES", bool: "BOOL", int: "INT64", float: "FP64"}
        classifier = card.task == "classification"
        self.label_type = by_type.get(labels.pop(), "BYTES") if len(labels) == 1 else "BYTES"
        if not classifier:
            self.label_type = "FP64"
        outputs = [{"name": "predict", "datatype": self.label_type, "shape": [-1]}]
        if classifier:
            outputs.append(
                {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(card.classes)]}
            )
        parameters: dict[str, Any] = {"model_tag": card.model_tag, "run_id": card.run_id}
        parameters["task"] = card.task
        if classifier:
            parameters["classes"] = self.classes
        model = {
            "name": self.name,
            "versions": [self.version],
            "platform": "sklearn",
            "inputs": self.inputs.metadata(),
            "outputs": outputs,
            "parameters": parameters,
        }
        self._model_json = json.dumps(model, separators=(",", ":")).encode()
        server = {"name": "prediction", "version": _server_version(), "extensions": EXTENSIONS}
        self._server_json = json.dumps(server, separators=(",", ":")).encode()
        self._head = members(
            {
                "model_name": self.name,
                "model_version": self.version,
                "parameters": {"run_id": card.run_id},
            }
        )
        self._known: dict[str, Method] = {}

    async def answer(self, where: Route, method: str, headers: Headers, body: bytes) -> Answer:
        """(status, headers, body) of one request to a /v2 route."""
        if (
            where.action == "infer"
            and method == "POST"
            and self.answers.ready
            and self._unknown(where) is None
        ):
            try:
                return await self._infer(where.template or "", headers, body)
            except TensorError as exc:
                return self._error(400, str(exc), detail=exc.detail)
            except PredictionError as exc:
                return self._error(400, str(exc))
        return self._described(where, method)

    def _described(self, where: Route, method: str) -> Answer:
        """Every answer but an inference: health, metadata, and the refusals, in order."""
        if where.action == "unknown":
            return self._error(404, "not found: no such route of the Open Inference Protocol")
        if method != where.method:
            allow = (b"allow", b"POST" if where.method == "POST" else b"GET, HEAD")
            return self._error(405, "method not allowed", [allow])
        if where.action == "live":
            return _json(200, {"live": True}, self.model_headers)
        if not self.answers.ready:
            return self._error(503, "the model is still loading")
        if where.action == "ready":
            return _json(200, {"ready": True}, self.model_headers)
        if where.action == "server":
            return 200, [_JSON, *self.model_headers], self._server_json
        unknown = self._unknown(where)
        if unknown is not None:
            return self._error(404, unknown)
        if where.action == "model":
            return 200, [_JSON, *self.model_headers], self._model_json
        return _json(200, {"name": self.name, "ready": True}, self.model_headers)  # model_ready

    def _unknown(self, where: Route) -> str | None:
        """Why the route's model is not this one, or None."""
        if where.name == self.name and where.version in (None, self.version):
            return None
        serves = f"this service serves model '{self.name}', version '{self.version}'"
        if where.name != self.name:
            return f"unknown model '{where.name}': {serves}"
        return f"model '{self.name}' has no version '{where.version}': {serves}"

    def _error(
        self,
        status: int,
        message: str,
        extra: Headers | None = None,
        detail: list[dict[str, Any]] | None = None,
    ) -> Answer:
        # The request id is filled in by the exchange, as for every error answer.
        headers = [_JSON, *self.model_headers, *(extra or [])]
        return status, headers, error_body(message, detail)

    async def _infer(self, endpoint: str, headers: Headers, body: bytes) -> Answer:
        request, tensors = read(body, header_length(headers))
        rows = self.inputs.rows(tensors)
        wanted = self._wanted(request.get("outputs"), request.get("parameters") or {})
        methods = [method for method, _ in wanted]
        if len(methods) == 1:
            results = {methods[0]: await self.answers.predicted(methods[0], rows, endpoint)}
        else:  # both: each from its own batcher, side by side
            both = await asyncio.gather(
                *(self.answers.predicted(m, rows, endpoint) for m in methods)
            )
            results = dict(zip(methods, both, strict=True))
        outputs = [(self._output(name, results[name]), binary) for name, binary in wanted]
        given = request.get("id")
        head = self._head if given is None else f"{members({'id': given})}{self._head}"
        payload, length = encode(head, outputs)
        if length is None:
            return 200, [_JSON, *self.model_headers], payload
        size = (b"inference-header-content-length", str(length).encode())
        return 200, [_BINARY, size, *self.model_headers], payload

    def _wanted(
        self, requested: list[RequestOutput] | None, parameters: dict[str, Any]
    ) -> list[tuple[Method, bool]]:
        """The outputs to send, in order, each with "as binary data"."""
        default = parameters.get("binary_data_output") is True
        known = self._known or self._outputs_known()
        if requested is None:
            return [(method, default) for method in known.values()]
        wanted: dict[Method, bool] = {}
        for output in requested:
            method = known.get(output["name"])
            if method is None:
                raise TensorError(
                    f"unknown output '{output['name']}'; the model's outputs are "
                    + ", ".join(known)
                )
            wanted[method] = (output.get("parameters") or {}).get("binary_data", default) is True
        return list(wanted.items())

    def _outputs_known(self) -> dict[str, Method]:
        """The model's outputs by name (its methods, once it is loaded)."""
        self._known = {m: m for m in self.answers.methods}
        return self._known

    def _output(self, name: Method, result: list[Any]) -> Output:
        if name == "predict":
            return Output(name, self.label_type, [len(result)], result)
        flat = [p for row in result for p in row.values()]
        width = len(result[0]) if result else 0
        return Output(name, "FP64", [len(result), width], flat, {"classes": self.classes})


def _server_version() -> str:
    """The server's version: BentoML's, the server this service runs in."""
    return package_version("bentoml")

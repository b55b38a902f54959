"""The prediction service's own HTTP layer: one ASGI middleware for every request.

It does, in one pass (each extra middleware layer costs on every request):
- the body limit: a declared Content-Length over it, or a chunked body that grows past it,
  gets a JSON 413 (uvicorn and BentoML have no limit of their own);
- the request id: X-Request-ID from the proxy (or a new one), echoed on the response and
  written in this request's access-log line;
- error bodies: BentoML's validation 400 lists pydantic ``loc``/``msg`` pairs; they are
  reshaped so each problem names its row, feature and reason, like every other 4xx here;
- API keys, when required: a missing or wrong key is a JSON 401 before anything else runs;
- metrics by model tag: requests, latency and errors.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from training.serving.keys import KeyStore, presented_key

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("bentoml.access")
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
#: Paths whose requests are logged and counted; health and metrics scrapes are not.
API_PATHS = frozenset({"/predict", "/predict_proba", "/model"})


class BodyTooLarge(Exception):
    pass


def error_body(message: str, detail: list[dict[str, Any]] | None = None, **extra: Any) -> bytes:
    """The one shape of every error this service sends: error, detail[], request_id."""
    return json.dumps(
        {"error": message, "detail": detail or [], **extra}, separators=(",", ":")
    ).encode()


def reshape_validation(body: bytes) -> bytes | None:
    """BentoML's pydantic 400 -> the service's error shape; None if it is something else."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    detail = data.get("detail") if isinstance(data, dict) else None
    # Pydantic's items carry loc and msg; the service's own errors (row/feature/reason) pass.
    if not detail or not isinstance(detail, list):
        return None
    problems: list[dict[str, Any]] = []
    for item in detail:
        if not isinstance(item, dict) or "msg" not in item:
            return None
        loc = [p for p in item.get("loc", []) if p != "instances"]
        row = loc[0] if loc and isinstance(loc[0], int) else None
        feature = loc[1] if row is not None and len(loc) > 1 else None
        field = ".".join(str(p) for p in item.get("loc", [])) or None
        problems.append(
            {"row": row, "feature": feature, "field": field, "reason": item.get("msg", "")}
        )
    count = len(problems)
    return error_body(f"invalid request: {count} problem{'s' if count != 1 else ''}", problems)


def _request_headers(scope: Scope) -> tuple[bytes, int | None]:
    """The request id to use (the proxy's, if well-formed, else a new one) and the declared
    body length (None when the body is chunked or absent)."""
    request_id = b""
    declared: int | None = None
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _REQUEST_ID.match(value):
            request_id = value
        elif name == b"content-length":
            declared = int(value) if value.isdigit() else None
    return request_id or uuid.uuid4().hex.encode(), declared


class _Exchange:
    """One request's answer as it passes: the request id goes on, its status is noted, and a
    validation 400 of an API route is held until its body is reshaped."""

    def __init__(self, scope: Scope, send: Send, request_id: bytes) -> None:
        self.reshape_400 = scope["path"] in API_PATHS
        self.downstream = send
        self.request_id = request_id
        self.status = 500
        self._held: Message | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
            message["headers"] = [*headers, (b"x-request-id", self.request_id)]
            if self.status == 400 and self.reshape_400:
                self._held = message  # sent with the reshaped body
                return
        elif self._held is not None and message["type"] == "http.response.body":
            body = reshape_validation(message.get("body", b"")) or message.get("body", b"")
            start, self._held = self._held, None
            start["headers"] = [(k, v) for k, v in start["headers"] if k != b"content-length"]
            start["headers"].append((b"content-length", str(len(body)).encode()))
            await self.downstream(start)
            message = {"type": "http.response.body", "body": body}
        await self.downstream(message)

    async def refuse(
        self, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Answer in the service's error shape before the app sees the request."""
        self.status = status
        body = error_body(message, request_id=self.request_id.decode())
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", self.request_id),
            *(extra or []),
        ]
        await self.downstream({"type": "http.response.start", "status": status, "headers": headers})
        await self.downstream({"type": "http.response.body", "body": body})


class ServiceHTTP:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        model_tag: str,
        access_log_enabled: bool,
        observe: Callable[[str, int, float], None],
        keys: KeyStore | None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.model_tag = model_tag
        self.access_log_enabled = access_log_enabled
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id, declared = _request_headers(scope)
        exchange = _Exchange(scope, send, request_id)
        try:
            await self._answer(scope, receive, exchange, declared)
        finally:
            if scope["path"] in API_PATHS:
                self._record(scope, exchange, time.perf_counter() - started)

    async def _answer(
        self, scope: Scope, receive: Receive, exchange: _Exchange, declared: int | None
    ) -> None:
        if self.keys is not None and scope["path"] in API_PATHS:
            refusal = self._check_key(scope)
            if refusal is not None:
                await exchange.refuse(401, refusal, [(b"www-authenticate", b"Bearer")])
                return
        try:
            if declared is not None and declared > self.max_body_bytes:
                raise BodyTooLarge
            if declared is None and scope["method"] in ("POST", "PUT", "PATCH"):
                receive = await self._buffered(receive)
            await self.app(scope, receive, exchange.send)
        except BodyTooLarge:
            await exchange.refuse(413, f"request body is larger than {self.max_body_bytes} bytes")

    def _record(self, scope: Scope, exchange: _Exchange, elapsed: float) -> None:
        """Metrics and the access-log line of an API request."""
        path = scope["path"]
        self.observe(path, exchange.status, elapsed)
        if self.access_log_enabled:
            client = scope.get("client")
            access_log.info(
                "%s %s %s %d %.2fms request_id=%s model=%s",
                client[0] if client else "-",
                scope["method"],
                path,
                exchange.status,
                elapsed * 1000,
                exchange.request_id.decode(),
                self.model_tag,
            )

    def _check_key(self, scope: Scope) -> str | None:
        """Why this request may not pass, or None. The key itself is never logged."""
        assert self.keys is not None
        key = presented_key(scope["headers"])
        if not key:
            return "missing API key: send Authorization: Bearer <key>"
        if self.keys.verify(key, "predict") is None:
            return "invalid or revoked API key"
        return None

    async def _buffered(self, receive: Receive) -> Receive:
        """Read a body of undeclared length (chunked) up to the limit, then replay it.

        Counting while the app reads would raise inside BentoML, which answers any exception
        with a 500; reading first keeps the 413 ours. Only chunked requests pay for it.
        """
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return replay


class _CallerMistakes(logging.Filter):
    """Drop BentoML's traceback for a request that failed validation: the caller's mistake,
    answered 400 and logged as such in the access line, is not a server error."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        return not (record.exc_info and isinstance(record.exc_info[1], ValidationError))


def quiet_validation_tracebacks() -> None:
    logging.getLogger("bentoml._internal.server.http_app").addFilter(_CallerMistakes())

"""The prediction service's own HTTP layer: one ASGI middleware for every request.

It does, in one pass (each extra middleware layer costs on every request):
- the rules of ``exchange``: the request id, every error in one shape (BentoML's validation
  400 reshaped so each problem names its row, feature and reason), the request timeout as a
  JSON 504 (BentoML's own, outside this layer, would answer without our shape and leave the
  request counted as a 500; it stays only as a backstop), a JSON 500 for a crash;
- the body limit: a declared Content-Length over it, or a chunked body that grows past it,
  gets a JSON 413 (uvicorn and BentoML have no limit of their own);
- API keys, when required: a missing or wrong key is a JSON 401 before anything else runs;
- HEAD on the health routes, which the edge's checks may use (BentoML answers them 405);
- the answers of the API routes themselves, once the worker has its model (``Answers``):
  BentoML's request handling behind this layer cost more than half a single-row request;
  the Open Inference Protocol's /v2 routes likewise (``oip``), under the same rules;
- metrics by model tag and the access line, for the API routes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from training.serving.answers import ENDPOINTS, Answers
from training.serving.exchange import (
    ASGIApp,
    Exchange,
    Message,
    Receive,
    RequestIdInLogs,
    Scope,
    Send,
    is_json,
    loggable_path,
    respond,
)
from training.serving.keys import KeyStore, presented_key
from training.serving.metrics import exposition
from training.serving.oip import OpenInference, Route, route

access_log = logging.getLogger("bentoml.access")
#: Paths whose requests are logged and counted; health and metrics scrapes are not.
API_PATHS = frozenset({"/predict", "/predict_proba", "/model"})
HEALTH_PATHS = frozenset({"/livez", "/readyz", "/healthz"})
#: Bodies an inference of the protocol may come in besides JSON (kserve's client sends its
#: binary tensors so).
BINARY = b"application/octet-stream"
NOT_CANARY = "not in the canary pool: no canary step runs on this instance"
IN_CANARY = "in the canary pool: it takes only the canary's share of the requests"
HELD = (
    "out of rotation: the rollout holds this instance back while it starts or finishes its "
    "requests before it stops; send new requests elsewhere"
)


class BodyTooLarge(Exception):
    pass


async def _read(receive: Receive, limit: int | None = None) -> bytes:
    """A request's whole body; BodyTooLarge past ``limit`` bytes."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        seen += len(chunk)
        if limit is not None and seen > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _captured(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[int, bytes]:
    """The status and body of the app's answer, kept instead of sent."""
    status, chunks = 500, []

    async def keep(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, keep)
    return status, b"".join(chunks)


def _without_body(send: Send) -> Send:
    """A HEAD answer: the GET answer's status and headers, no body."""

    async def head(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {"type": "http.response.body", "body": b""}
        await send(message)

    return head


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
        timeout_s: float,
        answers: Answers | None = None,
        hold_file: Path | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.model_tag = model_tag
        self.access_log_enabled = access_log_enabled
        self.observe = observe
        self.timeout_s = timeout_s
        self.answers = answers
        self.hold_file = hold_file
        self._too_large = f"request body is larger than {max_body_bytes} bytes"
        self.protocol = OpenInference(answers) if answers is not None else None
        self._model_headers = self.protocol.model_headers if self.protocol is not None else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        where = route(path) if self.protocol is not None else None
        if scope["method"] == "HEAD" and (
            path in HEALTH_PATHS or (where is not None and where.method == "GET")
        ):
            scope = {**scope, "method": "GET"}
            send = _without_body(send)
        started = time.perf_counter()
        api = path in API_PATHS or where is not None
        exchange = Exchange(scope, send, path in API_PATHS, self._model_headers if api else None)
        try:
            await self._answer(scope, receive, exchange, where)
        finally:
            endpoint = path if path in API_PATHS else where.template if where else None
            if endpoint is not None:
                self._record(scope, exchange, time.perf_counter() - started, endpoint)

    async def _answer(
        self, scope: Scope, receive: Receive, exchange: Exchange, where: Route | None
    ) -> None:
        oversize = exchange.oversize()
        if oversize is not None:
            await exchange.refuse(431, oversize)
            return
        if scope["path"] == "/readyz" or (where is not None and where.action == "ready"):
            query = scope.get("query_string", b"") if where is None else b""
            refusal = self._out_of_pool(query)
            # The protocol's readiness is the instance's: held out (starting, draining) or
            # not; a canary step's pools are the edge's business only.
            if refusal is not None and (where is None or refusal == HELD):
                await exchange.refuse(503, refusal)
                return
        refusal = self._refused_body(scope["method"], exchange, where)
        if refusal is not None:
            await exchange.refuse(415, refusal)
            return
        if self.keys is not None and (
            scope["path"] in API_PATHS or (where is not None and where.keyed)
        ):
            refusal = self._check_key(scope)
            if refusal is not None:
                await exchange.refuse(401, refusal, [(b"www-authenticate", b"Bearer")])
                return
        declared = exchange.content_length
        if declared is not None and declared > self.max_body_bytes:
            await exchange.refuse(413, self._too_large)
            return

        async def limited(scope: Scope, receive: Receive, send: Send) -> None:
            # Inside the timeout: a body that trickles in is answered 504 like a slow model.
            if declared is None and scope["method"] in ("POST", "PUT", "PATCH"):
                try:
                    receive = await self._buffered(receive)
                except BodyTooLarge:
                    await exchange.refuse(413, self._too_large)
                    return
            await self._direct(scope, receive, send, where)

        await exchange.run(limited, scope, receive, self.timeout_s)

    @staticmethod
    def _refused_body(method: str, exchange: Exchange, where: Route | None) -> str | None:
        """Why a POST body's media type or encoding is refused (415), or None."""
        if method != "POST":
            return None
        if exchange.content_encoding not in (None, b"identity"):
            return "send the body uncompressed (no Content-Encoding)"
        media = exchange.content_type  # none given: read as JSON
        if media is None or is_json(media) or (where is not None and media == BINARY):
            return None
        if where is not None:
            return f"send the body as Content-Type: application/json (or {BINARY.decode()})"
        return "send the body as Content-Type: application/json"

    async def _direct(
        self, scope: Scope, receive: Receive, send: Send, where: Route | None = None
    ) -> None:
        """The API routes answered here when the model is loaded; all else by BentoML."""
        answers, path, method = self.answers, scope["path"], scope["method"]
        if where is not None and self.protocol is not None:  # answered, loaded or not
            body = await _read(receive) if method == "POST" else b""
            status, headers, payload = await self.protocol.answer(
                where, method, scope["headers"], body
            )
            await respond(send, status, headers, payload)
        elif path == "/metrics" and answers is not None and method == "GET":
            page, media = await exposition()  # BentoML's own route is off (see metrics.py)
            await respond(send, 200, [(b"content-type", media)], page)
        elif answers is None or not answers.ready:
            await self.app(scope, receive, send)
        elif method == "POST" and path in ENDPOINTS:
            status, body = await answers.parsed(ENDPOINTS[path], await _read(receive))
            await respond(send, status, answers.raw_headers, body)
        elif path == "/model":  # not a BentoML route: its methods are answered here
            if method in ("GET", "HEAD"):
                await respond(send, 200, answers.raw_headers, answers.card_json)
            else:
                await respond(send, 405, [(b"allow", b"GET, HEAD")], b"")
        elif method == "GET" and path == "/docs.json":
            status, body = await _captured(self.app, scope, receive)
            if status == 200:
                body = answers.document(body)
            await respond(send, status, [(b"content-type", b"application/json")], body)
        else:
            await self.app(scope, receive, send)

    def _out_of_pool(self, query: bytes) -> str | None:
        """Why this instance is not in the pool the edge's health check asks about, or None.

        The rollout places an instance with its hold file: none, the stable pool (/readyz);
        "canary" in it, the canary pool of a canary step (/readyz?pool=canary); empty, neither
        (a new instance until its smoke prediction passed, an old one while it drains). Out of
        a pool, the edge sends it no new requests; those it has are still answered."""
        try:
            place = None if self.hold_file is None else self.hold_file.read_text().strip()
        except FileNotFoundError:
            place = None
        wanted = "canary" if query == b"pool=canary" else None
        if place == wanted:
            return None
        if place == "":
            return HELD
        return NOT_CANARY if wanted == "canary" else IN_CANARY

    def _record(self, scope: Scope, exchange: Exchange, elapsed: float, endpoint: str) -> None:
        """Metrics (labelled by ``endpoint``, the route) and the access-log line of an API
        request."""
        self.observe(endpoint, exchange.status, elapsed)
        if self.access_log_enabled:
            client = scope.get("client")
            access_log.info(
                "%s %s %s %d %.2fms request_id=%s model=%s",
                client[0] if client else "-",
                scope["method"],
                loggable_path(scope),
                exchange.status,
                elapsed * 1000,
                exchange.rid,
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
        body = await _read(receive, self.max_body_bytes)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


class _CallerMistakes(logging.Filter):
    """Drop BentoML's traceback for a request that failed validation: the caller's mistake,
    answered 400 and logged as such in the access line, is not a server error."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        return not (record.exc_info and isinstance(record.exc_info[1], ValidationError))


def configure_logs() -> None:
    """BentoML's request errors: a caller's validation mistake is no traceback; any other
    carries the request id, as the answer does."""
    logger = logging.getLogger("bentoml._internal.server.http_app")
    logger.addFilter(_CallerMistakes())
    logger.addFilter(RequestIdInLogs())

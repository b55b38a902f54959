"""The HTTP rules both services keep, whatever answers: request ids, one error shape, a timeout.

``Exchange`` stands between an ASGI app and the server for one request:
- the request id: the edge's X-Request-ID when well-formed, else a new one; it goes on the
  response, into ``request_id`` (a context variable, so log lines can carry it) and into
  every error body;
- every answer of 400 or more leaves in one shape, ``{"error", "detail", "request_id"}``,
  framework-made ones included (a text/plain 405 or 404, BentoML's own 500 with the text of
  an exception): a 500 never carries internals, only the request id the log has them under.
  A page written for people (``text/html``: the training service's dashboard says why a
  filter or a form was refused) keeps its own body;
- a timeout (``expire``): an answer not begun in time is a JSON 504, counted and logged as
  such, and whatever the app sends afterwards is dropped;
- ``crashed``: an exception that escaped the app becomes a JSON 500 and one logged traceback.
Error answers pay for the reshaping; others pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

from training.serving.keys import KEY

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
#: Request headers past this many bytes are a 431 (the edge lets up to 1 MB through, so that
#: HTTP/1.1 and HTTP/2 clients get the same JSON answer).
HEADERS_MAX_BYTES = 16 * 1024
#: The current request's id, for log lines written while it is being answered.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
log = logging.getLogger("training.http")


def error_body(message: str, detail: list[Any] | None = None, request_id: str = "") -> bytes:
    """The one shape of every error: error, detail[], request_id."""
    data = {"error": message, "detail": detail or [], "request_id": request_id}
    return json.dumps(data, separators=(",", ":")).encode()


def _validation_problems(data: Any) -> list[dict[str, Any]] | None:
    """Pydantic's ``loc``/``msg`` items (BentoML's validation 400) as row, feature, field and
    reason; None if the body is something else."""
    detail = data.get("detail") if isinstance(data, dict) else None
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
        problems.append({"row": row, "feature": feature, "field": field, "reason": item["msg"]})
    return problems


def shape_error(status: int, body: bytes, request_id: str, *, validation: bool = False) -> bytes:
    """An error answer's body in the one shape. ``validation``: reshape pydantic's 400."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, list) and len(data) == 1:  # BentoML sends some errors as [{...}]
        data = data[0]
    problems = _validation_problems(data) if validation and status == 400 else None
    if problems is not None:
        count = len(problems)
        message = f"invalid request: {count} problem{'s' if count != 1 else ''}"
        return error_body(message, problems, request_id)
    if status == 500:
        return error_body(internal_error(request_id), [], request_id)
    message = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail: list[Any] = []
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        message = data["error"]
        detail = data["detail"] if isinstance(data.get("detail"), list) else []
    return error_body(message, detail, request_id)


def _is_page(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k == b"content-type" and media_type(v) == b"text/html" for k, v in headers)


def media_type(content_type: bytes) -> bytes:
    """A Content-Type's media type: without parameters, in lower case."""
    return content_type.split(b";")[0].strip().lower()


def is_json(media: bytes) -> bool:
    return media == b"application/json" or media.endswith(b"+json")


def loggable_path(scope: Scope) -> str:
    """The path for an access line: never the query string, and an API key that a client put
    in the path (by mistake) cut to its public id."""
    return KEY.sub(lambda m: f"tk_{m.group(1)}_<redacted>", str(scope["path"]))


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """One whole answer: its start (headers and Content-Length), then its body."""
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})


class Exchange:
    """One request's answer as it passes (see the module's docstring)."""

    def __init__(
        self,
        scope: Scope,
        send: Send,
        validation: bool = False,
        always: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.downstream = send
        # Headers every answer made here carries (the served model's tag and run).
        self.always = always or []
        # The request's headers, read in one pass: what both services' rules look at.
        presented, size = b"", 0
        self.content_length: int | None = None  # None: chunked or no body
        self.content_type: bytes | None = None  # its media type, without parameters
        self.content_encoding: bytes | None = None
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            if name == b"x-request-id" and _REQUEST_ID.match(value):
                presented = bytes(value)
            elif name == b"content-length":
                self.content_length = int(value) if value.isdigit() else None
            elif name == b"content-type":
                self.content_type = media_type(value)
            elif name == b"content-encoding":
                self.content_encoding = value.strip().lower()
        self.header_bytes = size
        # The edge's X-Request-ID if it is well-formed, else a new one.
        self.request_id = presented or uuid.uuid4().hex.encode()
        self.rid = self.request_id.decode()
        self.validation = validation
        self.shape_errors = scope["method"] != "HEAD"  # a HEAD answer has no body to shape
        self.status = 500
        self.started = False
        self.timed_out = False
        self._held: Message | None = None
        self._held_body: list[bytes] = []
        request_id.set(self.rid)

    def oversize(self) -> str | None:
        """Why the request's headers are refused (431), or None."""
        if self.header_bytes <= HEADERS_MAX_BYTES:
            return None
        return f"request headers are {self.header_bytes} bytes, more than {HEADERS_MAX_BYTES}"

    async def send(self, message: Message) -> None:
        if self.timed_out:
            return  # answered 504 already
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
            message["headers"] = [*headers, (b"x-request-id", self.request_id)]
            if self.status >= 400 and self.shape_errors and not _is_page(headers):
                self._held = message  # sent with its body, reshaped
                return
        elif self._held is not None and message["type"] == "http.response.body":
            self._held_body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = shape_error(
                self.status, b"".join(self._held_body), self.rid, validation=self.validation
            )
            start, self._held = self._held, None
            drop = (b"content-length", b"content-type")
            start["headers"] = [(k, v) for k, v in start["headers"] if k not in drop]
            start["headers"] += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            await self.downstream(start)
            message = {"type": "http.response.body", "body": body}
        await self.downstream(message)

    async def refuse(
        self, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Answer in the one shape without the app (a refused key, a body over the limit)."""
        self.started = True
        self.status = status
        headers = [
            (b"content-type", b"application/json"),
            (b"x-request-id", self.request_id),
            *self.always,
            *(extra or []),
        ]
        await respond(self.downstream, status, headers, error_body(message, [], self.rid))

    async def run(
        self, app: ASGIApp, scope: Scope, receive: Receive, timeout_s: float | None = None
    ) -> None:
        """The app answers this request, or a JSON 504 past ``timeout_s`` without an answer, or
        a JSON 500 for an exception it let escape."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        answered: list[asyncio.Task[None]] = []

        def expire() -> None:
            if self.started:
                return
            answered.append(loop.create_task(self.refuse(504, f"no answer within {timeout_s} s")))
            self.timed_out = True
            task.cancel()

        timer = loop.call_later(timeout_s, expire) if timeout_s is not None else None
        try:
            await app(scope, receive, self.send)
        except asyncio.CancelledError:
            if not self.timed_out:
                raise
            task.uncancel()
        except Exception:  # noqa: BLE001 - the catch-all: logged under its request id
            await self.crashed()
        finally:
            if timer is not None:
                timer.cancel()
        if answered:
            await answered[0]

    async def crashed(self) -> None:
        """An exception escaped the app: its traceback goes to the log under the request id;
        the client gets a JSON 500 naming that id (if nothing was sent yet)."""
        log.exception("request %s failed", self.rid)
        if not self.started:
            await self.refuse(500, internal_error(self.rid))
        else:
            self.status = 500


def internal_error(rid: str) -> str:
    """What a 500 says: never the exception, only where to look."""
    return f"internal error: the service log has its details under request id {rid}"


class RequestIdInLogs(logging.Filter):
    """Adds the request id to a record written while a request is answered (BentoML's
    "Exception on /predict" traceback, say), so the log line and the answer meet."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        if rid != "-" and isinstance(record.msg, str) and "request_id=" not in record.msg:
            record.msg = f"{record.msg} (request_id={rid})"
        return True

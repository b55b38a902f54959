"""Every error of the training API in one shape, ``ErrorBody``, and documented as such.

Errors raised by the layers below (``UserError`` and its kin), request validation and
Starlette's own (404 of an unknown path, 405) all leave as ``{"error", "detail"}``; the
OpenAPI document shows that shape instead of FastAPI's default 422 body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from training.api.schemas import ErrorBody, Problem, json_response
from training.errors import Busy, Unavailable, UserError

RETRY_AFTER_S = 10  # a full queue drains at the pace of trainings: come back in a while

_DESCRIPTIONS = {
    400: "The request is invalid; `detail` names each field at fault.",
    401: "Missing, invalid or revoked API key (when keys are required).",
    403: "The key may only predict; the training API needs an admin key.",
    404: "No such run, model version, alias or upload.",
    409: "The run has ended already, or changed meanwhile.",
    405: "The path does not take this method; `Allow` names those it takes.",
    413: "The upload is larger than TRAINING_MAX_UPLOAD_MB.",
    415: "The body is not in the media type the route takes.",
    422: "The upload is not a usable CSV; the error names the line.",
    429: "Too many trainings are waiting; retry after `Retry-After` seconds.",
    500: "The service failed; its log has the details under `request_id`.",
    503: "The run store is busy or unreachable; retry after `Retry-After` seconds.",
}


def responses(
    *codes: int, checked: bool = True, store: bool = True
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for these error statuses, besides 401, 403 (every route but the health
    checks needs a key) and 500; 400 for a route with input to check, 503 for one that needs
    the run store."""
    always = {401, 403, 500} | ({400} if checked else set()) | ({503} if store else set())
    return {
        code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]}
        for code in sorted(always | set(codes))
    }


def error_response(
    status: int, message: str, field: str | None = None, detail: list[Problem] | None = None
) -> Response:
    problems = (
        detail if detail is not None else ([Problem(field=field, reason=message)] if field else [])
    )
    return json_response(ErrorBody(error=message, detail=problems), status)


async def _user_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, UserError)
    response = error_response(exc.status_code, exc.message, exc.field)
    if isinstance(exc, Busy):
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def _unavailable(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Unavailable)
    response = error_response(exc.status_code, exc.message)
    response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def invalid_request(errors: Sequence[Any]) -> tuple[str, list[Problem]]:
    """Pydantic's validation errors as one line naming the first field, and every problem."""
    problems = [
        Problem(field=".".join(str(p) for p in e["loc"] if p != "body") or None, reason=e["msg"])
        for e in errors
    ]
    first = problems[0]
    return f"invalid request: {first.field or 'body'}: {first.reason}", problems


async def _invalid(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message, problems = invalid_request(exc.errors())
    return error_response(400, message, detail=problems)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = error_response(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:  # Starlette names the first route's methods; the path has more
        response.headers["Allow"] = ", ".join(_methods_of(request))
    return response


def _methods_of(request: Request) -> list[str]:
    """Every method some route of this path takes (asked of the routes, method by method)."""
    methods = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.routes):
            methods.append(method)
    return methods


def install(app: FastAPI) -> None:
    """The handlers that turn every error into ``ErrorBody``, and a document that says so."""
    app.add_exception_handler(UserError, _user_error)
    app.add_exception_handler(Unavailable, _unavailable)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _without_default_422(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _without_default_422(spec: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a 422 with its own body on every route that takes input; ours answer
    such mistakes 400 with ``ErrorBody``, which every route declares already."""
    default = "#/components/schemas/HTTPValidationError"
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422", {})
            schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref") == default:
                del operation["responses"]["422"]
    schemas = spec.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return spec

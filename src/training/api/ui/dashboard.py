"""The dashboard's frame: its state on the app, a visit (the request, its session, the path the
browser sees), the dependencies that guard its routes, and pages rendered from templates.

Pages are Jinja2 templates rendered here (autoescaped; an undefined name is an error, not a
blank). A refusal on a page route (a bad filter, an unknown run, a busy store) is a page that
says why, with its status; a page behind the login sends the visitor to log in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from training.api.auth import DASHBOARD, route_path
from training.api.errors import RETRY_AFTER_S, invalid_request
from training.api.ui import views
from training.api.ui.access import COOKIE, Forbidden, LoginRequired, Session, Sessions
from training.api.ui.forms import Fields, read_form
from training.errors import Unavailable, UserError
from training.settings import ServerSettings

HERE = Path(__file__).parent
TEMPLATES, STATIC = HERE / "templates", HERE / "static"
CSRF_FIELD, CSRF_HEADER = "csrf", "x-csrf-token"


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(number=views.number, when=views.when, duration=views.duration)
    return env


def _versions() -> dict[str, str]:
    """Each static file's content hash: its URL changes with it, so it can be cached long."""
    return {
        str(path.relative_to(STATIC)): hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in STATIC.rglob("*")
        if path.is_file()
    }


@dataclass(frozen=True)
class Dashboard:
    settings: ServerSettings
    sessions: Sessions
    templates: Environment
    versions: dict[str, str]

    @classmethod
    def make(cls, settings: ServerSettings, sessions: Sessions) -> Dashboard:
        return cls(settings, sessions, _templates(), _versions())


@dataclass(frozen=True)
class Visit:
    """One request to the dashboard: its session (a new one goes out with the answer) and the
    dashboard's path as the browser sees it (``/training/ui`` through the edge, which says so
    in X-Forwarded-Prefix; ``/ui`` on the service's own port)."""

    request: Request
    dashboard: Dashboard
    session: Session
    base: str
    fresh: bool

    @property
    def sessions(self) -> Sessions:
        return self.dashboard.sessions

    def static(self, name: str) -> str:
        return f"{self.base}/static/{name}?v={self.dashboard.versions[name]}"

    def page(self, template: str, status: int = 200, **values: Any) -> Response:
        values.update(
            base=self.base,
            csrf=self.sessions.csrf(self.session),
            session=self.session,
            keys_required=self.sessions.keys is not None,
            static=self.static,
        )
        html = self.dashboard.templates.get_template(template).render(values)
        headers = {"Cache-Control": "no-store"}
        if status in (429, 503):  # a full queue, a busy store: worth another try in a while
            headers["Retry-After"] = str(RETRY_AFTER_S)
        return self.keep(HTMLResponse(html, status, headers))

    def redirect(self, path: str) -> Response:
        """See Other: after a form, the page that shows its effect (reloading it repeats
        nothing)."""
        return self.keep(RedirectResponse(self.base + path, status_code=303))

    def keep(self, response: Response, session: Session | None = None) -> Response:
        """Set the session cookie on the answer: a session made on this visit, or ``session``."""
        if session is None and not self.fresh:
            return response
        response.set_cookie(
            COOKIE,
            self.sessions.cookie(session or self.session),
            max_age=int(self.sessions.lifetime_s),
            path=self.base,
            secure=True,
            httponly=True,
            samesite="strict",
        )
        return response

    def forget(self, response: Response) -> Response:
        response.delete_cookie(
            COOKIE, path=self.base, secure=True, httponly=True, samesite="strict"
        )
        return response


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def visit_of(request: Request) -> Visit:
    dashboard = dashboard_of(request)
    session = dashboard.sessions.read(request.cookies.get(COOKIE))
    root = dashboard.settings.training_root_path
    # The edge sets the header; any other value (a client's own) is ignored.
    prefix = root if request.headers.get("x-forwarded-prefix") == root else ""
    return Visit(
        request,
        dashboard,
        session or dashboard.sessions.anonymous(),
        prefix + DASHBOARD,
        fresh=session is None,
    )


async def _visit(request: Request) -> Visit:
    return visit_of(request)


async def _member(visit: Annotated[Visit, Depends(_visit)]) -> Visit:
    if visit.sessions.keys is not None and not visit.session.signed_in:
        raise LoginRequired("log in with an admin key first")
    return visit


VisitDep = Annotated[Visit, Depends(_visit)]
MemberDep = Annotated[Visit, Depends(_member)]
STALE_FORM = "this form is stale or did not come from this dashboard: reload the page and retry"


@dataclass(frozen=True)
class Form:
    """A posted form whose CSRF token matched its session."""

    fields: Fields
    visit: Visit


async def _checked(request: Request, visit: Visit) -> Form:
    fields = await read_form(request)
    if not visit.sessions.csrf_ok(visit.session, fields.get(CSRF_FIELD)):
        raise Forbidden(STALE_FORM)
    return Form(fields, visit)


async def _form(request: Request, visit: MemberDep) -> Form:
    return await _checked(request, visit)


async def _access_form(request: Request, visit: VisitDep) -> Form:
    """The login and logout forms: no session needed, a CSRF token still is."""
    return await _checked(request, visit)


async def _script_call(request: Request, visit: MemberDep) -> Visit:
    """A call by the dashboard's own script that changes something (an upload): the CSRF token
    comes in a header."""
    if not visit.sessions.csrf_ok(visit.session, request.headers.get(CSRF_HEADER)):
        raise Forbidden(STALE_FORM)
    return visit


FormDep = Annotated[Form, Depends(_form)]
AccessFormDep = Annotated[Form, Depends(_access_form)]
ScriptCallDep = Annotated[Visit, Depends(_script_call)]


def next_path(request: Request) -> str:
    """Where the visitor was going, relative to the dashboard (for after the login)."""
    path = route_path(request.scope)[len(DASHBOARD) :] or "/"
    query = request.url.query
    return quote(path + (f"?{query}" if query else ""), safe="")


def refusal(request: Request, exc: Exception) -> Response:
    """The page for a request a dashboard route refused."""
    visit = visit_of(request)
    if isinstance(exc, LoginRequired):
        return visit.redirect(f"/login?next={next_path(request)}")
    if isinstance(exc, RequestValidationError):
        message, _ = invalid_request(exc.errors())
        return visit.page("error.html", 400, message=message)
    assert isinstance(exc, (UserError, Unavailable))
    return visit.page("error.html", exc.status_code, message=exc.message)


class PageRoute(APIRoute):
    """A route that answers with a page, refusals included (the API's answer JSON)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_or_refusal(request: Request) -> Response:
            try:
                return await handler(request)
            except (UserError, Unavailable, RequestValidationError) as exc:
                return refusal(request, exc)

        return page_or_refusal

"""Logging in with an admin key (once: the answer is the session cookie) and logging out."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import RedirectResponse, Response

from training.api.ui.access import Forbidden, LoginRequired
from training.api.ui.dashboard import AccessFormDep, PageRoute, Visit, VisitDep

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)
NEXT_MAX = 2000


def safe_next(path: str) -> str:
    """Where to go after the login: a path inside the dashboard, never another site."""
    if (
        path.startswith("/")
        and not path.startswith("//")
        and "\\" not in path
        and len(path) <= NEXT_MAX
        and path.isprintable()
    ):
        return path
    return "/"


def _login_page(visit: Visit, next: str, status: int = 200, error: str | None = None) -> Response:
    return visit.page("login.html", status, next=safe_next(next), error=error)


@router.get("/login")
def login_page(visit: VisitDep, next: str = "/") -> Response:
    if visit.sessions.keys is None or visit.session.signed_in:
        return visit.redirect(safe_next(next))
    return _login_page(visit, next)


@router.post("/login")
def log_in(form: AccessFormDep) -> Response:
    """The key comes in the form's body (never a URL) and is kept nowhere: the session cookie
    names the key's public id; a wrong key shows the login page again, saying why."""
    visit, fields = form.visit, form.fields
    try:
        session = visit.sessions.login(fields.get("key"))
    except (LoginRequired, Forbidden) as exc:
        return _login_page(visit, fields.get("next"), exc.status_code, exc.message)
    answer = RedirectResponse(visit.base + safe_next(fields.get("next")), status_code=303)
    return visit.keep(answer, session)


@router.post("/logout")
def log_out(form: AccessFormDep) -> Response:
    visit = form.visit
    visit.sessions.end(visit.session)
    return visit.forget(RedirectResponse(visit.base + "/login", status_code=303))

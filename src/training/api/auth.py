"""API keys for the training API: every route but the health checks and the dashboard needs an
admin key. The dashboard (``/ui/``) is for browsers, which cannot send a key with each request:
it asks for the admin key once and checks its own session cookie (``training.api.ui.access``)."""

from __future__ import annotations

from typing import Any

from training.api.errors import error_response
from training.serving.keys import KeyStore, presented_key

PUBLIC = frozenset({"/livez", "/readyz"})
DASHBOARD = "/ui"


def route_path(scope: Any) -> str:
    """The route's own path: uvicorn puts the prefix (root_path) in front of it, as ASGI says."""
    path, root = str(scope["path"]), str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root + "/") else path


class AdminKeys:
    """ASGI middleware: a missing or wrong key is a 401, a predict key a 403."""

    def __init__(self, app: Any, keys: KeyStore | None) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.keys is None or _open(route_path(scope)):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope["headers"])
        if not key:
            response = error_response(401, "missing API key: send Authorization: Bearer <key>")
        elif (record := self.keys.verify(key, "admin")) is not None:
            # Who asked, for the records that name it (an alias move, a rollout).
            scope.setdefault("state", {})["caller"] = f"key:{record.name}"
            await self.app(scope, receive, send)
            return
        elif self.keys.verify(key, "predict") is not None:
            response = error_response(
                403, "this key may only predict; the training API needs an admin key"
            )
        else:
            response = error_response(401, "invalid or revoked API key")
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


def _open(path: str) -> bool:
    """The health checks, and the dashboard, which checks its own sessions."""
    return path in PUBLIC or path == DASHBOARD or path.startswith(DASHBOARD + "/")

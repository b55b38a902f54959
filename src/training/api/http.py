"""The training API's outermost layer: the exchange rules both services keep (request ids, one
error shape for every answer of 400 or more, a JSON 500 for a crash, see
``training.serving.exchange``) and the access line, which names the path but never the query
string (a key sent there by mistake must not reach the log)."""

from __future__ import annotations

import logging
import time

from training.serving.exchange import (
    ASGIApp,
    Exchange,
    Receive,
    Scope,
    Send,
    loggable_path,
)

access_log = logging.getLogger("training.access")


class Exchanges:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        exchange = Exchange(scope, send)
        oversize = exchange.oversize()
        try:
            if oversize is not None:
                await exchange.refuse(431, oversize)
            else:
                await exchange.run(self.app, scope, receive)
        finally:
            client = scope.get("client")
            access_log.info(
                "%s %s %s %d %.2fms request_id=%s",
                client[0] if client else "-",
                scope["method"],
                loggable_path(scope),
                exchange.status,
                (time.perf_counter() - started) * 1000,
                exchange.rid,
            )

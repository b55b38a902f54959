"""`training serve`: the train-model web service on loopback (published by Caddy)."""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

from training.cli.output import stderr


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the training web service on 127.0.0.1")
    serve.add_argument("--port", type=int, help="port (default TRAINING_PORT, 3001)")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from training.api.app import create_app
    from training.ops.edge import SERVICE_KEEP_ALIVE_S
    from training.settings import ServerSettings, load

    settings = load(ServerSettings)
    for name in ("training.access", "training.http", "training.jobs"):
        logging.getLogger(name).setLevel(logging.INFO)
    port = args.port or settings.training_port
    app = create_app(settings)
    stderr.print(
        f"training service on http://127.0.0.1:{port} (published as {settings.training_root_path}/)"
    )
    # uvicorn turns SIGTERM and SIGINT into a graceful shutdown (jobs get their grace period),
    # then re-raises the signal to the handler it found: make that a no-op, so a clean stop
    # exits 0 instead of taking the CLI's interrupt path (exit 130, which systemd calls a failure).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        # X-Forwarded-* are believed from the proxy on loopback alone.
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        server_header=False,
        root_path=settings.training_root_path,
        # Open event streams must not hold a stop back for long; running jobs get their own
        # grace period (TRAINING_SHUTDOWN_GRACE_S) after this.
        timeout_graceful_shutdown=3,
        # Longer than the edge keeps an idle upstream connection (see ops.edge).
        timeout_keep_alive=SERVICE_KEEP_ALIVE_S,
        log_level="info",
        # uvicorn's access line carries the query string (where a key may have been sent by
        # mistake); the app writes its own, with the request id and without the query.
        access_log=False,
    )
    return 0

"""The HTTPS edge: Caddy's environment (from ``EdgeSettings``), its process and its CA."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from training.errors import UserError
from training.ops.processes import spawn_logged, tool
from training.settings import EdgeSettings, project_root


def ca_certificate(caddy_data: Path) -> Path:
    """The local CA's root certificate, which clients verify the edge with (never -k)."""
    return caddy_data / "pki" / "authorities" / "local" / "root.crt"


def caddy_env(
    edge: EdgeSettings,
    *,
    service_port: int,
    max_body_bytes: int,
    service_workers: int,
    training_port: int,
    max_upload_mb: int,
) -> dict[str, str]:
    """The environment the Caddyfile's placeholders read."""
    caddy_data = edge.caddy_data
    return {
        # Caddy gets the CPUs the service's workers leave: Go's idle spinning on a busy box
        # otherwise costs the Python workers (measured ~0.22 ms CPU per proxied request).
        "GOMAXPROCS": str(max(1, (os.cpu_count() or 1) - service_workers)),
        "CADDY_DATA_DIR": str(caddy_data),
        # Caddy writes a few files of its own under XDG folders; keep them beside its data.
        "XDG_DATA_HOME": str(caddy_data / "xdg-data"),
        "XDG_CONFIG_HOME": str(caddy_data / "xdg-config"),
        "HTTPS_PORT": str(edge.https_port),
        "HTTP_PORT": str(edge.http_port),
        "DOMAIN": edge.domain,
        "ALLOWED_HOSTS": edge.hosts(),
        "CORS_ORIGINS": edge.cors_origins,
        "EXPOSE_DOCS": "true" if edge.expose_docs else "false",
        "TRUSTED_PROXIES": edge.trusted_proxies,
        "HSTS_MAX_AGE": str(edge.hsts_max_age),
        "SERVICE_UPSTREAM": f"127.0.0.1:{service_port}",
        "MAX_BODY_BYTES": str(max_body_bytes),
        "TRAINING_UPSTREAM": f"127.0.0.1:{training_port}",
        "TRAINING_MAX_UPLOAD_MB": str(max_upload_mb),
    }


def start_caddy(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    caddy_data = Path(env["CADDY_DATA_DIR"])
    caddy_data.mkdir(parents=True, exist_ok=True, mode=0o700)
    args = [
        tool("caddy"),
        "run",
        "--config",
        str(project_root() / "Caddyfile"),
        "--adapter",
        "caddyfile",
    ]
    return spawn_logged(args, {**os.environ, **env}, log)


def require_free(ports: dict[str, int]) -> None:
    """Refuse ports already bound. Caddy would not notice: it binds with SO_REUSEPORT and
    would silently share the port with whoever holds it. SO_REUSEADDR, as the servers bind:
    a port whose last connections wait in TIME_WAIT (a restart right after Ctrl-C) is free."""
    for name, port in ports.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
            except OSError as exc:
                raise UserError(
                    f"port {port} ({name}) is in use; set {name} to a free port"
                ) from exc

"""The HTTPS edge: Caddy's environment (from ``EdgeSettings``), its process and its CA."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from training.errors import UserError
from training.ops.processes import spawn_logged, tool
from training.settings import EdgeSettings, project_root

#: The edge's active health checks of the prediction instances (the Caddyfile's proxy_opts):
#: every HEALTH_INTERVAL_S; an instance is down after HEALTH_FAILS failed checks in a row and
#: up again after one that passes.
HEALTH_INTERVAL_S = 1
HEALTH_FAILS = 2
#: How long the edge may take to notice that an instance became ready or began draining.
EDGE_NOTICE_S = HEALTH_INTERVAL_S * (HEALTH_FAILS + 1) + 0.5
#: The edge closes a connection to a backend once idle this long; the backends keep theirs
#: open longer (SERVICE_KEEP_ALIVE_S). The other way round (uvicorn's default is 5 s, the edge
#: kept 90 s) a backend closes an idle connection just as the edge sends a request on it, and
#: that POST, which cannot be retried, is a 502 (seen here in a rollout under load).
UPSTREAM_IDLE_S = 30
SERVICE_KEEP_ALIVE_S = 75


def ca_certificate(caddy_data: Path) -> Path:
    """The local CA's root certificate, which clients verify the edge with (never -k)."""
    return caddy_data / "pki" / "authorities" / "local" / "root.crt"


def caddy_env(
    edge: EdgeSettings,
    *,
    service_ports: list[int],
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
        # Every slot an instance may run in; the health checks find the ones that serve.
        "SERVICE_UPSTREAM": " ".join(f"127.0.0.1:{port}" for port in service_ports),
        "HEALTH_INTERVAL": f"{HEALTH_INTERVAL_S}s",
        "HEALTH_FAILS": str(HEALTH_FAILS),
        "UPSTREAM_IDLE": f"{UPSTREAM_IDLE_S}s",
        "MAX_BODY_BYTES": str(max_body_bytes),
        "TRAINING_UPSTREAM": f"127.0.0.1:{training_port}",
        "TRAINING_MAX_UPLOAD_MB": str(max_upload_mb),
        "CANARY_SHARE_FILE": str(canary_share_file(edge.data_dir)),
    }


def canary_share_file(data_dir: Path) -> Path:
    """Which share of the requests the edge sends to a canary step's pool (see Caddyfile)."""
    return data_dir / "run" / "canary-share"


def write_canary_share(path: Path, percent: int | None) -> None:
    """The edge reads the file per request: replaced whole (rename), never seen half written.
    Two hex digits: requests whose random id sorts below them (of 256) go to the canary."""
    text = "" if not percent else f"{min(255, round(percent * 256 / 100)):02x}"
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)  # private, as all of DATA_DIR: the edge runs as the same user
    fresh.replace(path)


def start_caddy(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    caddy_data = Path(env["CADDY_DATA_DIR"])
    caddy_data.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = ["--config", str(project_root() / "Caddyfile"), "--adapter", "caddyfile"]
    return spawn_logged([tool("caddy"), "run", *config], {**os.environ, **env}, log)


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

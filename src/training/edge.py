"""The HTTPS edge: Caddy's settings, its environment, its process and its CA certificate."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from training.config import project_root, tool
from training.errors import UserError
from training.processes import spawn_logged


class EdgeSettings(BaseSettings):
    """What the proxy exposes and how: the allowed external connections of the manual."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, case_sensitive=True
    )

    https_port: int = Field(
        default=8443,
        ge=1,
        le=65535,
        validation_alias="HTTPS_PORT",
        description="HTTPS port of the edge.",
    )
    http_port: int = Field(
        default=8080,
        ge=1,
        le=65535,
        validation_alias="HTTP_PORT",
        description="Plain HTTP port; it only redirects to HTTPS.",
    )
    domain: str = Field(
        default="localhost",
        min_length=1,
        validation_alias="DOMAIN",
        description="Public name; a real domain gets Let's Encrypt certificates.",
    )
    allowed_hosts: str = Field(
        default="",
        validation_alias="ALLOWED_HOSTS",
        description="Host headers accepted (space separated); default "
        "DOMAIN, localhost and 127.0.0.1.",
    )
    cors_origins: str = Field(
        default="",
        validation_alias="CORS_ORIGINS",
        description="Origins allowed by CORS (space separated); none by default.",
    )
    expose_docs: bool = Field(
        default=False,
        validation_alias="EXPOSE_DOCS",
        description="Publish the OpenAPI document and its UI at the edge.",
    )
    trusted_proxies: str = Field(
        default="",
        validation_alias="TRUSTED_PROXIES",
        description="CIDRs of proxies in front of the edge whose "
        "X-Forwarded-* are believed; none by default.",
    )
    hsts_max_age: int = Field(
        default=31_536_000,
        ge=0,
        validation_alias="HSTS_MAX_AGE",
        description="Strict-Transport-Security max-age (0 for throwaway localhost setups).",
    )
    caddy_data_dir: Path | None = Field(
        default=None,
        validation_alias="CADDY_DATA_DIR",
        description="Caddy's certificates and local CA; default DATA_DIR/caddy.",
    )

    def hosts(self) -> str:
        return self.allowed_hosts or " ".join(
            dict.fromkeys([self.domain, "localhost", "127.0.0.1"])
        )

    def data_dir(self, data_dir: Path) -> Path:
        return self.caddy_data_dir or data_dir / "caddy"

    def url(self) -> str:
        return f"https://{self.domain}:{self.https_port}"


@functools.cache
def get_edge_settings() -> EdgeSettings:
    return EdgeSettings()


def ca_certificate(caddy_data: Path) -> Path:
    """The local CA's root certificate, which clients verify the edge with (never -k)."""
    return caddy_data / "pki" / "authorities" / "local" / "root.crt"


def caddy_env(
    edge: EdgeSettings,
    caddy_data: Path,
    *,
    service_port: int,
    max_body_bytes: int,
    service_workers: int,
    training_port: int,
    max_upload_mb: int,
) -> dict[str, str]:
    """The environment the Caddyfile's placeholders read."""
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
    would silently share the port with whoever holds it."""
    for name, port in ports.items():
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError as exc:
                raise UserError(
                    f"port {port} ({name}) is in use; set {name} to a free port"
                ) from exc

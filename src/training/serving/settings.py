"""Settings read from the environment (no prefix; the README's configuration table names them).

``SharedSettings`` holds what every process role needs (the data folder and the API keys);
each role adds its own: ``ServiceSettings`` here for the prediction service, and
``training.config.Settings`` for the CLI and the run store. This module stays light: the
bento carries it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def project_root() -> Path:
    """The checkout this package runs from (src layout), or the working directory if installed."""
    here = Path(__file__).resolve().parents[3]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


class SharedSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, case_sensitive=True
    )

    data_dir: Path = Field(
        default_factory=lambda: project_root() / "data",
        validation_alias="DATA_DIR",
        description="Folder for the default SQLite run store, API keys, uploads and runtime files.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        validation_alias="API_KEYS_FILE",
        description="Salted hashes of the API keys (mode 0600); default DATA_DIR/api_keys.json.",
    )
    require_api_key: bool = Field(
        default=False,
        validation_alias="REQUIRE_API_KEY",
        description="Refuse API requests without a valid key (on in `make up`).",
    )

    @property
    def keys_path(self) -> Path:
        return self.api_keys_file or self.data_dir / "api_keys.json"


class ServiceSettings(SharedSettings):
    service_host: str = Field(
        default="127.0.0.1",
        validation_alias="SERVICE_HOST",
        description="Address the prediction service binds; loopback so only the proxy reaches it.",
    )
    service_port: int = Field(
        default=3000,
        ge=1,
        le=65535,
        validation_alias="SERVICE_PORT",
        description="Port of the prediction service.",
    )
    service_workers: int = Field(
        # One CPU is left to the proxy on the same host: measured on 2 cores (bench/edge.py),
        # two workers beside Caddy and the client starved both, and p99 through the edge rose.
        default_factory=lambda: max(1, (os.cpu_count() or 1) - 1),
        ge=1,
        le=64,
        validation_alias="SERVICE_WORKERS",
        description="Worker processes of the prediction service (default: one per CPU but one).",
    )

    predict_max_rows: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        validation_alias="PREDICT_MAX_ROWS",
        description="Most rows one prediction request may carry.",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        validation_alias="MAX_BODY_BYTES",
        description="Largest request body the service and the proxy accept (bytes).",
    )
    request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        validation_alias="REQUEST_TIMEOUT_S",
        description="A request still running after this many seconds is answered 504.",
    )
    access_log: bool = Field(
        default=True,
        validation_alias="ACCESS_LOG",
        description="One log line per prediction request, with its X-Request-ID.",
    )


@functools.cache
def get_service_settings() -> ServiceSettings:
    return ServiceSettings()

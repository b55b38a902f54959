"""Settings of the prediction service process (read from the environment, no prefix)."""

from __future__ import annotations

import functools
import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, case_sensitive=True)

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
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=64,
        validation_alias="SERVICE_WORKERS",
        description="Worker processes of the prediction service (default: one per CPU).",
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

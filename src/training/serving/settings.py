"""Settings of every process role, read from the environment by field name in capitals.

``ProjectSettings`` is the one base every role's class derives from, so the rules are set once:
no prefix (a field ``data_dir`` is the variable ``DATA_DIR``, the name the README's
configuration table documents), a ``.env`` file in the working directory, unknown variables
ignored. ``ServiceSettings`` (the prediction service) lives here because the bento carries
this package; the training side, its web service and the edge derive theirs in
``training.settings``. ``load(cls)`` reads a role's settings once per process; tests call
``reload()`` after changing the environment.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TypeVar, cast

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def project_root() -> Path:
    """The checkout this package runs from (src layout), or the working directory if installed."""
    here = Path(__file__).resolve().parents[3]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


class ProjectSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    data_dir: Path = Field(
        default_factory=lambda: project_root() / "data",
        description="Folder for the default SQLite run store, API keys, uploads and runtime files.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="Salted hashes of the API keys (mode 0600); default DATA_DIR/api_keys.json.",
    )
    require_api_key: bool = Field(
        default=False, description="Refuse API requests without a valid key (on in `make up`)."
    )

    @property
    def keys_path(self) -> Path:
        return self.api_keys_file or self.data_dir / "api_keys.json"

    def on_load(self) -> None:
        """Called once when ``load`` reads a role's settings: hand over to other libraries what
        they read from the environment themselves (nothing for this role)."""


class ServiceSettings(ProjectSettings):
    service_host: str = Field(
        default="127.0.0.1",
        description="Address the prediction service binds; loopback so only the proxy reaches it.",
    )
    service_port: int = Field(
        default=3000, ge=1, le=65535, description="Port of the prediction service."
    )
    service_workers: int = Field(
        # One CPU is left to the proxy on the same host: measured on 2 cores (bench/edge.py),
        # two workers beside Caddy and the client starved both, and p99 through the edge rose.
        default_factory=lambda: max(1, (os.cpu_count() or 1) - 1),
        ge=1,
        le=64,
        description="Worker processes of the prediction service (default: one per CPU but one).",
    )
    predict_max_rows: int = Field(
        default=1000, ge=1, le=100_000, description="Most rows one prediction request may carry."
    )
    predict_max_batch_rows: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Most rows one model call may take when requests are batched.",
    )
    predict_max_wait_ms: float = Field(
        default=5.0,
        ge=0,
        le=1000,
        description="Longest a request may wait for more requests to join its batch (ms).",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body the service and the proxy accept (bytes).",
    )
    request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="A request still running after this many seconds is answered 504.",
    )
    service_hold_file: Path | None = Field(
        default=None,
        description="While this file exists, /readyz answers 503 so the edge sends requests to "
        "other instances (the rollout holds a new instance back until its smoke prediction "
        "passed, and drains an old one before stopping it).",
    )
    access_log: bool = Field(
        default=True, description="One log line per prediction request, with its X-Request-ID."
    )


S = TypeVar("S", bound=ProjectSettings)
_loaded: dict[type[ProjectSettings], ProjectSettings] = {}
_loading = threading.Lock()


def load(cls: type[S]) -> S:
    """This process's settings of one role, read from the environment once."""
    with _loading:
        settings = _loaded.get(cls)
        if settings is None:
            settings = _loaded[cls] = cls()
            settings.on_load()
    return cast(S, settings)


def reload() -> None:
    """Forget what ``load`` read, so the next call reads the environment again (tests)."""
    with _loading:
        _loaded.clear()

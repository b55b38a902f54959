"""Settings of the training side: the CLI and run store, the training web service, the edge.

Each role's class derives from ``training.serving.settings.ProjectSettings`` (one set of rules
for every role, the prediction service's included) and is read once per process with
``load(Settings)``, ``load(ServerSettings)`` or ``load(EdgeSettings)``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from sqlalchemy.engine import make_url

from training.serving.settings import ProjectSettings, ServiceSettings, load, project_root, reload

__all__ = [
    "EdgeSettings",
    "ProjectSettings",
    "RolloutSettings",
    "ServerSettings",
    "ServiceSettings",
    "Settings",
    "load",
    "project_root",
    "reload",
]


class Settings(ProjectSettings):
    """The CLI, the run store, the model store and the training pipeline."""

    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the run store; default: SQLite file sql_app.db in DATA_DIR.",
    )
    bentoml_home: Path | None = Field(
        default=None,
        description="BentoML's model and bento store; default: BentoML's own (~/bentoml).",
    )
    sqlite_busy_timeout_ms: int = Field(
        default=30_000,
        ge=0,
        description="How long a SQLite writer waits for the write lock before failing.",
    )
    container_cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "training",
        description="Where `training containerize` keeps the pinned wheels and its build folders "
        "(the base image is kept in podman's own store).",
    )
    default_experiment: str = Field(
        default="default",
        min_length=1,
        description="Experiment a run is recorded under when none is given.",
    )

    @field_validator("database_url")
    @classmethod
    def _parseable_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        make_url(value.get_secret_value())  # raises ArgumentError with a readable message
        return value

    @property
    def effective_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.data_dir / 'sql_app.db'}"

    def on_load(self) -> None:
        """BentoML reads its home from the environment, once per process."""
        if self.bentoml_home is not None:
            os.environ["BENTOML_HOME"] = str(self.bentoml_home)
        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

    def public_view(self) -> dict[str, str]:
        """The effective settings by environment name, secrets masked, for people and logs."""
        view: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown = "********" if value.get_secret_value() else ""
            else:
                shown = "" if value is None else str(value)
            view[name.upper()] = shown
        view["DATABASE_URL"] = make_url(self.effective_database_url).render_as_string(
            hide_password=True
        )
        view["BENTOML_HOME"] = str(self.bentoml_home or Path.home() / "bentoml")
        view["API_KEYS_FILE"] = str(self.keys_path)
        return view


class ServerSettings(Settings):
    """The training web service (`training serve`): its port, queue and job limits."""

    training_port: int = Field(
        default=3001, ge=1, le=65535, description="Port of the training service (loopback only)."
    )
    training_max_jobs: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 1) // 2),
        ge=1,
        le=64,
        description="Trainings run at once, each in its own process (default: half the CPUs).",
    )
    training_max_queued: int = Field(
        default=100, ge=0, description="Waiting trainings past which a submission gets 429."
    )
    training_max_upload_mb: int = Field(
        default=50,
        ge=1,
        le=10_000,
        description="Largest CSV upload (MB); the edge's limit for uploads follows it.",
    )
    training_job_memory_mb: int = Field(
        default=4096,
        ge=256,
        description="Address-space cap of one training process (MB); past it the run fails.",
    )
    training_shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM, how long running trainings may finish before they are killed.",
    )
    training_cluster: str | None = Field(
        default=None,
        description="Address of a Dask scheduler (`training scheduler`), e.g. tcp://10.0.0.5:8786: "
        "jobs run on its workers. Unset: each job is a process on this machine.",
    )
    training_cluster_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="How long connecting to TRAINING_CLUSTER may take before the start fails.",
    )
    training_sweep_max_runs: int = Field(
        default=200, ge=1, le=10_000, description="Most runs one sweep may ask for."
    )
    training_root_path: str = Field(
        default="/training",
        description="Path prefix under which the edge publishes the training service.",
    )
    ui_session_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs the dashboard's session cookies and CSRF tokens (at least "
        "32 characters); default: 32 random bytes made once in DATA_DIR/ui_session.key (0600).",
    )
    ui_session_hours: float = Field(
        default=8.0,
        gt=0,
        le=720,
        description="How long a dashboard login lasts before the admin key is asked again.",
    )

    @field_validator("ui_session_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 32:
            raise ValueError("UI_SESSION_SECRET must be at least 32 characters")
        return value

    @field_validator("training_cluster")
    @classmethod
    def _scheduler_address(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not re.fullmatch(r"(tcp|tls)://[^\s/:]+:\d{1,5}", value):
            raise ValueError(f"expected tcp://HOST:PORT (or tls://HOST:PORT), got {value!r}")
        return value

    @property
    def max_upload_bytes(self) -> int:
        return self.training_max_upload_mb * 1024 * 1024

    @property
    def run_logs_dir(self) -> Path:
        """Where each training job's output goes, one file per run (``RUN_ID.log``)."""
        return self.data_dir / "logs" / "runs"


class EdgeSettings(ProjectSettings):
    """What the proxy exposes and how: the allowed external connections of the manual."""

    https_port: int = Field(default=8443, ge=1, le=65535, description="HTTPS port of the edge.")
    http_port: int = Field(
        default=8080, ge=1, le=65535, description="Plain HTTP port; it only redirects to HTTPS."
    )
    domain: str = Field(
        default="localhost",
        min_length=1,
        description="Public name; a real domain gets Let's Encrypt certificates.",
    )
    allowed_hosts: str = Field(
        default="",
        description="Host headers accepted (space separated); default "
        "DOMAIN, localhost and 127.0.0.1.",
    )
    cors_origins: str = Field(
        default="", description="Origins allowed by CORS (space separated); none by default."
    )
    expose_docs: bool = Field(
        default=False, description="Publish the OpenAPI document and its UI at the edge."
    )
    trusted_proxies: str = Field(
        default="",
        description="CIDRs of proxies in front of the edge whose "
        "X-Forwarded-* are believed; none by default.",
    )
    hsts_max_age: int = Field(
        default=31_536_000,
        ge=0,
        description="Strict-Transport-Security max-age (0 for throwaway localhost setups).",
    )
    caddy_data_dir: Path | None = Field(
        default=None, description="Caddy's certificates and local CA; default DATA_DIR/caddy."
    )

    def hosts(self) -> str:
        return self.allowed_hosts or " ".join(
            dict.fromkeys([self.domain, "localhost", "127.0.0.1"])
        )

    @property
    def caddy_data(self) -> Path:
        return self.caddy_data_dir or self.data_dir / "caddy"

    def url(self) -> str:
        return f"https://{self.domain}:{self.https_port}"


class RolloutSettings(ProjectSettings):
    """What the running stack serves and how it follows the registry (`training up`)."""

    serve_alias: str = Field(
        default="production",
        pattern=r"^[a-z][a-z0-9_-]{0,99}$",
        description="Registry alias the stack serves; when it moves, the new target is rolled out.",
    )
    service_replicas: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Instances of the prediction service behind the edge. Their slots are the "
        "ports SERVICE_PORT, SERVICE_PORT+2, ... (twice as many: a rollout starts the new "
        "instances beside the old ones).",
    )
    service_runtime: Literal["process", "container"] = Field(
        default="process",
        description="How the prediction service's instances run: `bentoml serve` processes, or "
        "containers of the bento's image (podman, published on loopback only; `training "
        "containerize` builds the image, once per bento).",
    )
    rollout_ready_timeout_s: float = Field(
        default=180.0,
        gt=0,
        le=3600,
        description="How long a new version may take to start and answer its smoke prediction "
        "before the rollout fails (the old version keeps serving).",
    )

    def slot_ports(self, service_port: int) -> list[int]:
        """Every port an instance may listen on: two groups of SERVICE_REPLICAS, even steps
        from SERVICE_PORT (so the training service's default, SERVICE_PORT + 1, stays clear)."""
        return [service_port + 2 * slot for slot in range(2 * self.service_replicas)]

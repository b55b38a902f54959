"""Settings for the training side (CLI, run store, build): one cached instance per process.

Every field is read from the environment under the name in ``validation_alias`` (no prefix:
the names are the ones the README's configuration table documents), or from a ``.env`` file
in the working directory. Tests swap settings by changing the environment and calling
``get_settings.cache_clear()``.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from sqlalchemy.engine import make_url

from training.serving.settings import SharedSettings, project_root

__all__ = [
    "ServerSettings",
    "Settings",
    "get_server_settings",
    "get_settings",
    "project_root",
    "tool",
]


def tool(name: str) -> str:
    """A command installed beside this Python (the project's .venv), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else name


class Settings(SharedSettings):
    database_url: str | None = Field(
        default=None,
        validation_alias="DATABASE_URL",
        description="SQLAlchemy URL of the run store; default: SQLite file sql_app.db in DATA_DIR.",
    )
    bentoml_home: Path | None = Field(
        default=None,
        validation_alias="BENTOML_HOME",
        description="BentoML's model and bento store; default: BentoML's own (~/bentoml).",
    )
    sqlite_busy_timeout_ms: int = Field(
        default=30_000,
        ge=0,
        validation_alias="SQLITE_BUSY_TIMEOUT_MS",
        description="How long a SQLite writer waits for the write lock before failing.",
    )
    default_experiment: str = Field(
        default="default",
        min_length=1,
        validation_alias="DEFAULT_EXPERIMENT",
        description="Experiment a run is recorded under when none is given.",
    )

    @field_validator("database_url")
    @classmethod
    def _parseable_url(cls, value: str | None) -> str | None:
        if value:
            make_url(value)  # raises ArgumentError with a readable message
        return value or None

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'sql_app.db'}"

    def apply_environment(self) -> None:
        """Hand settings that other libraries read from the environment over to them."""
        if self.bentoml_home is not None:
            os.environ["BENTOML_HOME"] = str(self.bentoml_home)
        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

    def public_view(self) -> dict[str, str]:
        """The effective settings by environment name, secrets masked, for people and logs."""
        view: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown = "********" if value.get_secret_value() else ""
            elif value is None:
                shown = ""
            else:
                shown = str(value)
            view[str(field.validation_alias)] = shown
        view["DATABASE_URL"] = make_url(self.effective_database_url).render_as_string(
            hide_password=True
        )
        view["BENTOML_HOME"] = str(self.bentoml_home or Path.home() / "bentoml")
        view["API_KEYS_FILE"] = str(self.keys_path)
        return view


@functools.cache
def get_settings() -> Settings:
    settings = Settings()
    settings.apply_environment()
    return settings


class ServerSettings(Settings):
    """The training web service (`training serve`): its port, queue and job limits."""

    training_port: int = Field(
        default=3001,
        ge=1,
        le=65535,
        validation_alias="TRAINING_PORT",
        description="Port of the training service (loopback only).",
    )
    training_max_jobs: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 1) // 2),
        ge=1,
        le=64,
        validation_alias="TRAINING_MAX_JOBS",
        description="Trainings run at once, each in its own process (default: half the CPUs).",
    )
    training_max_queued: int = Field(
        default=100,
        ge=0,
        validation_alias="TRAINING_MAX_QUEUED",
        description="Waiting trainings past which a submission gets 429.",
    )
    training_max_upload_mb: int = Field(
        default=50,
        ge=1,
        le=10_000,
        validation_alias="TRAINING_MAX_UPLOAD_MB",
        description="Largest CSV upload (MB); the edge's limit for uploads follows it.",
    )
    training_job_memory_mb: int = Field(
        default=4096,
        ge=256,
        validation_alias="TRAINING_JOB_MEMORY_MB",
        description="Address-space cap of one training process (MB); past it the run fails.",
    )
    training_shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        validation_alias="TRAINING_SHUTDOWN_GRACE_S",
        description="On SIGTERM, how long running trainings may finish before they are killed.",
    )
    training_root_path: str = Field(
        default="/training",
        validation_alias="TRAINING_ROOT_PATH",
        description="Path prefix under which the edge publishes the training service.",
    )

    @property
    def max_upload_bytes(self) -> int:
        return self.training_max_upload_mb * 1024 * 1024


@functools.cache
def get_server_settings() -> ServerSettings:
    settings = ServerSettings()
    settings.apply_environment()
    return settings

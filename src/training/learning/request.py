"""What a valid training request is: one definition for the CLI and the web API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from training.learning.columns import Task
from training.store.records import StoredText, storable

KEY_MAX, VALUE_MAX = 250, 8000  # the run store's params/tags columns


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: StoredText = Field(
        min_length=1,
        max_length=500,
        description="A shipped data set (iris, wine, breast_cancer, diabetes, digits) or a CSV.",
    )
    target: StoredText | None = Field(
        default=None, max_length=200, description="Target column; default 'target' or the last."
    )
    model: StoredText = Field(
        min_length=1, max_length=64, description="Algorithm name, e.g. random_forest."
    )
    task: Task | None = Field(default=None, description="Force classification or regression.")
    params: dict[str, Any] = Field(default_factory=dict, description="Estimator hyper-parameters.")
    experiment: StoredText | None = Field(default=None, min_length=1, max_length=200)
    cv: int = Field(default=5, ge=0, le=20, description="Cross-validation folds; 0 turns it off.")
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0, description="Held-out share of rows.")
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    tags: dict[StoredText, StoredText] = Field(default_factory=dict, max_length=50)

    @field_validator("cv")
    @classmethod
    def _folds(cls, value: int) -> int:
        if value == 1:
            raise ValueError("cv must be 0 (no cross-validation) or at least 2 folds")
        return value

    @field_validator("params")
    @classmethod
    def _param_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, param in value.items():
            if not key or len(key) > KEY_MAX:
                raise ValueError(f"parameter names must be 1 to {KEY_MAX} characters")
            storable(key)
            if isinstance(param, str):  # recorded as it is (other values as JSON, escaped)
                storable(param)
        return value

    @field_validator("tags")
    @classmethod
    def _tag_sizes(cls, value: dict[str, str]) -> dict[str, str]:
        # The run store's columns: what does not fit is refused here, not by the database.
        for key, text in value.items():
            if not key or len(key) > KEY_MAX or len(text) > VALUE_MAX:
                raise ValueError(
                    f"tag names must be 1 to {KEY_MAX} characters, values at most {VALUE_MAX}"
                )
        return value

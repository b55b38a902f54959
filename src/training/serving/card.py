"""What a served model is: the metadata training saves with it, and the card GET /model shows.

Training writes ``ModelMetadata`` into the BentoML model store beside the pipeline; the service
reads it back (no run database) and shows it, with the tag and creation time, as the
``ModelCard``. One definition for the store, the response and its OpenAPI schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from training.serving.features import FeatureSchema

ClassLabel = str | bool | int | float
#: What a served model answers: labels or values, and class probabilities (classifiers).
Method = Literal["predict", "predict_proba"]


class ModelMetadata(BaseModel):
    # protected_namespaces: our fields may start with "model_" (model_tag is the API's name).
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    run_id: str = Field(default="", description="The run that trained this model.")
    task: str = Field(default="", description="classification or regression")
    algorithm: str = ""
    experiment: str = ""
    target: str = Field(default="", description="The column the model predicts.")
    features: FeatureSchema = Field(description="The input features, in order.")
    classes: list[ClassLabel] = Field(default_factory=list, description="Labels (classifiers).")
    metrics: dict[str, float] = Field(default_factory=dict, description="Held-out metrics.")
    dataset_sha256: str = ""


class ModelCard(ModelMetadata):
    """What GET /model shows: the metadata with the model's tag and creation time."""

    model_tag: str
    created_at: str

    @classmethod
    def from_stored(cls, stored: Any) -> ModelCard:
        """The card of a model in BentoML's store (``bentoml.models.get(tag)``)."""
        meta = ModelMetadata.model_validate(stored.info.metadata)
        if not meta.run_id:  # models saved before the run id was metadata carry it as a label
            meta = meta.model_copy(update={"run_id": stored.info.labels.get("run_id", "")})
        return cls(
            **dict(meta),
            model_tag=str(stored.tag),
            created_at=stored.info.creation_time.isoformat(),
        )

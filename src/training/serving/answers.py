"""What the prediction endpoints answer, whoever read the request.

``Answers`` holds the served model's card, the request schema made from its features, and,
once the worker has loaded the model, its batchers. It gives two ways in to one answer:
- ``answer(method, rows)``: rows that are valid already (BentoML validated them for the API
  methods of src/service.py, which define the OpenAPI document and BentoML's clients);
- ``parsed(body)``: the raw body of a request, validated here with the same pydantic rules
  (the same row type, the same ``loc`` for every problem). ``ServiceHTTP`` answers
  /predict, /predict_proba and /model this way without BentoML's request handling, which
  cost more than half of a single-row request's CPU (py-spy, worker under load).
GET /model is not a BentoML API (those are POST only): ``document`` adds it, with the card's
schema, to the OpenAPI document BentoML makes, so no web framework is loaded for it (a
mounted FastAPI app cost 6 MB per worker, 15 MB and 0.4 s in the supervising process).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from training.serving.batcher import Batcher, batchers_for
from training.serving.card import Method, ModelCard
from training.serving.exchange import error_body
from training.serving.metrics import ServiceMetrics
from training.serving.predictor import PredictionError, Predictor, Row
from training.serving.settings import ServiceSettings

ENDPOINTS: dict[str, Method] = {"/predict": "predict", "/predict_proba": "predict_proba"}


class Answers:
    def __init__(self, card: ModelCard, settings: ServiceSettings, metrics: ServiceMetrics) -> None:
        self.card, self.settings, self.metrics = card, settings, metrics
        self.row_type = card.features.row_type()
        limit = settings.predict_max_rows
        self.instances: Any = Annotated[
            list[self.row_type],  # type: ignore[name-defined]
            Field(
                min_length=1,
                max_length=limit,
                description=f"Rows keyed by feature name, at most {limit}.",
            ),
        ]
        body: type[BaseModel] = create_model(
            "PredictRequest",
            __config__=ConfigDict(extra="ignore"),
            instances=(self.instances, ...),  # type: ignore[arg-type]  # made at run time
        )
        self._body = TypeAdapter(body)
        self.headers = {"X-Model-Tag": card.model_tag, "X-Run-Id": card.run_id}
        self.raw_headers = [(b"content-type", b"application/json")] + [
            (k.lower().encode(), v.encode()) for k, v in self.headers.items()
        ]
        self.card_json = card.model_dump_json(exclude_none=True).encode()  # frozen: once
        self._tail = {"model_tag": card.model_tag, "run_id": card.run_id}
        self._batchers: dict[Method, Batcher] = {}

    def start(self, model_folder: Path, load_pipeline: Callable[[], Any]) -> None:
        """In the worker: the model's predictor (from its serving form when that answers
        alone, else with the unpickled pipeline) and a batcher per method, costs probed."""
        from training.serving.fastpath import read_form

        predictor = Predictor(self.card, read_form(model_folder), load_pipeline)
        self._batchers = batchers_for(
            predictor,
            max_rows=self.settings.predict_max_batch_rows,
            max_wait_s=self.settings.predict_max_wait_ms / 1000,
            observe=self.metrics,
        )

    @property
    def ready(self) -> bool:
        return bool(self._batchers)

    @property
    def methods(self) -> tuple[Method, ...]:
        """What the model answers: predict, and predict_proba for a classifier."""
        return tuple(self._batchers)

    async def predicted(self, method: Method, rows: list[Row], endpoint: str) -> list[Any]:
        """The answer for valid rows from the method's batcher, its rows counted under
        ``endpoint``; raises PredictionError (and KeyError for a method not in ``methods``)."""
        result = await self._batchers[method].answer(rows)
        self.metrics.predicted(endpoint, len(result))
        return result

    async def answer(self, method: Method, rows: list[Row]) -> tuple[int, bytes]:
        """(status, JSON body) for valid rows."""
        if method not in self._batchers:
            return 400, error_body(
                f"model {self.card.model_tag} is a {self.card.task} model; "
                "it has no class probabilities"
            )
        endpoint = "/predict" if method == "predict" else "/predict_proba"
        try:
            result = await self.predicted(method, rows, endpoint)
        except PredictionError as exc:
            return 422, error_body(str(exc))
        if method == "predict":
            data: dict[str, Any] = {"predictions": result, **self._tail}
        else:
            data = {"probabilities": result, "classes": self.card.classes, **self._tail}
        return 200, json.dumps(data, separators=(",", ":")).encode()

    async def parsed(self, method: Method, body: bytes) -> tuple[int, bytes]:
        """(status, JSON body) for a raw request body, validated as BentoML would."""
        try:
            request = self._body.validate_json(body)
        except ValidationError as exc:
            # BentoML's shape (pydantic's loc/msg items); the exchange reshapes it as it
            # reshapes BentoML's own.
            detail = exc.errors(include_url=False, include_context=False, include_input=False)
            return 400, json.dumps({"error": "validation", "detail": detail}).encode()
        rows: list[Row] = request.instances  # type: ignore[attr-defined]
        return await self.answer(method, rows)

    def document(self, spec_json: bytes) -> bytes:
        """BentoML's OpenAPI document with GET /model and the card's schema in it."""
        spec = json.loads(spec_json)
        schema = ModelCard.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(schema.pop("$defs", {}))
        schemas["ModelCard"] = schema
        card = {"$ref": "#/components/schemas/ModelCard"}
        spec.setdefault("paths", {})["/model"] = {
            "get": {
                "tags": ["Service APIs"],
                "summary": "Model card",
                "description": "The served model: tag, run, task, ordered feature schema, "
                "classes, metrics.",
                "operationId": "model_card",
                "responses": {
                    "200": {
                        "description": "The card.",
                        "content": {"application/json": {"schema": card}},
                    }
                },
            }
        }
        return json.dumps(spec).encode()

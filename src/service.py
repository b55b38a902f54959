"""The prediction service: one registered model behind a validated, fast JSON API (BentoML 1.4).

Which model: the bento argument ``model_tag``, an exact tag that `training build` resolved from
a registry alias; ``bentoml build`` records it, so a built bento serves without the run
database. The model is a CLASS attribute (``bentoml.models.BentoModel``) so the build packages
it (BentoML issues 4702 and 5319). Its metadata carries the feature schema, from which the
request schema below is made: the generated OpenAPI names every feature and its type, and
pydantic refuses bad rows before they reach the model.

Development serving: ``bentoml serve service:Prediction --working-dir src --arg model_tag=TAG``.
"""

import gc
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import bentoml
from anyio.to_thread import run_sync
from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.responses import Response

from training.serving.card import ModelCard
from training.serving.exchange import error_body
from training.serving.http import ServiceHTTP, configure_logs
from training.serving.keys import KeyStore
from training.serving.metrics import ServiceMetrics
from training.serving.predictor import PredictionError, Predictor
from training.serving.settings import ServiceSettings, load


class BentoArgs(BaseModel):
    model_tag: str = Field(min_length=3, description="Exact model tag (name:version) to serve.")


ARGS = bentoml.use_arguments(BentoArgs)
SETTINGS = load(ServiceSettings)
MODEL = bentoml.models.BentoModel(ARGS.model_tag)
_stored = MODEL.stored
if _stored is None:
    raise RuntimeError(f"model {ARGS.model_tag} is not in the BentoML model store")
CARD = ModelCard.from_stored(_stored)
Row = CARD.features.row_type()
Instances = Annotated[
    list[Row],  # type: ignore[valid-type]
    Field(
        min_length=1,
        max_length=SETTINGS.predict_max_rows,
        description=f"Rows keyed by feature name, at most {SETTINGS.predict_max_rows}.",
    ),
]
HEADERS = {"X-Model-Tag": CARD.model_tag, "X-Run-Id": CARD.run_id}
INLINE_ROWS = 64
T = TypeVar("T")
METRICS = ServiceMetrics(CARD.model_tag)
configure_logs()


class PredictResponse(BaseModel):
    predictions: list[str | int | float] = Field(description="One per row: class label or value.")
    model_tag: str
    run_id: str


class ProbaResponse(BaseModel):
    probabilities: list[dict[str, float]] = Field(description="One per row, keyed by class.")
    classes: list[str | int]
    model_tag: str
    run_id: str


# GET routes: BentoML APIs are POST only; a mounted FastAPI app is how BentoML serves (and
# documents, in the same OpenAPI) anything else.
model_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@model_app.get("/model", response_model=ModelCard, tags=["Service APIs"])
def model_card() -> Response:
    """The served model: tag, run, task, ordered feature schema, classes, metrics."""
    return Response(CARD_JSON, media_type="application/json", headers=HEADERS)


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


CARD_JSON = CARD.model_dump_json(
    exclude_none=True
).encode()  # the card is frozen: encode it once, not per request


def _answer(data: dict[str, Any]) -> Response:
    data["model_tag"], data["run_id"] = CARD.model_tag, CARD.run_id
    return Response(_json(data), media_type="application/json", headers=HEADERS)


async def _compute(predict: Callable[[list[Any]], T], rows: list[Any]) -> T:
    """Small requests inline (a thread hop costs more than their prediction); large ones in a
    thread, so the worker keeps answering health checks and the request timeout can fire."""
    if len(rows) <= INLINE_ROWS:
        return predict(rows)
    return await run_sync(predict, rows)


def _refuse(status: int, message: str) -> Response:
    return Response(
        error_body(message), status_code=status, media_type="application/json", headers=HEADERS
    )


@bentoml.asgi_app(model_app, path="/")
@bentoml.service(
    name="prediction",
    http={"host": SETTINGS.service_host, "port": SETTINGS.service_port},
    workers=SETTINGS.service_workers,
    # The request timeout is ServiceHTTP's (a JSON 504 in our shape, counted as a 504);
    # BentoML's own, which answers outside our middleware, is only a backstop.
    traffic={"timeout": SETTINGS.request_timeout_s + 30},
    # Our middleware writes the access line (with X-Request-ID) for API requests only.
    logging={"access": {"enabled": False}},
    # No tracing exporter is configured; OpenTelemetry's middleware would still cost about a
    # third of a single-row request, so the API routes are excluded.
    tracing={
        "excluded_urls": ["/predict", "/predict_proba", "/model", "/livez", "/readyz", "/metrics"]
    },
)
class Prediction:
    """Predictions from one trained scikit-learn pipeline; every answer names its model."""

    model_ref = MODEL

    def __init__(self) -> None:
        self.predictor = Predictor(bentoml.sklearn.load_model(self.model_ref), CARD)
        # Everything loaded so far lives as long as the worker: keep it out of the collector's
        # way, and collect the young generation less often (measured: p99 from ~100 ms to a few).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)

    # bentoml.api is untyped for mypy; the methods below are typed all the same.
    @bentoml.api(route="/predict", output_spec=PredictResponse)  # type: ignore[untyped-decorator]
    async def predict(self, instances: Instances) -> Response:
        """Predict each row: class labels as trained for classifiers, values for regressors."""
        try:
            predictions = await _compute(self.predictor.predict, instances)
        except PredictionError as exc:
            return _refuse(422, str(exc))
        METRICS.predicted("/predict", len(predictions))
        return _answer({"predictions": predictions})

    @bentoml.api(route="/predict_proba", output_spec=ProbaResponse)  # type: ignore[untyped-decorator]
    async def predict_proba(self, instances: Instances) -> Response:
        """Class probabilities of each row, keyed by class (classifiers only)."""
        if not self.predictor.is_classifier:
            return _refuse(
                400, f"model {CARD.model_tag} is a {CARD.task} model; it has no class probabilities"
            )
        try:
            probabilities = await _compute(self.predictor.predict_proba, instances)
        except PredictionError as exc:
            return _refuse(422, str(exc))
        METRICS.predicted("/predict_proba", len(probabilities))
        return _answer({"probabilities": probabilities, "classes": CARD.classes})


# The decorators turned the class into a bentoml Service, which mypy cannot see.
Prediction.add_asgi_middleware(  # type: ignore[attr-defined]
    ServiceHTTP,
    max_body_bytes=SETTINGS.max_body_bytes,
    model_tag=CARD.model_tag,
    access_log_enabled=SETTINGS.access_log,
    observe=METRICS.observe,
    keys=KeyStore(SETTINGS.keys_path) if SETTINGS.require_api_key else None,
    timeout_s=SETTINGS.request_timeout_s,
)

"""The prediction service: one registered model behind a validated, fast JSON API (BentoML 1.4).

Which model: the bento argument ``model_tag``, an exact tag that `training build` resolved from
a registry alias; ``bentoml build`` records it, so a built bento serves without the run
database. The model is a CLASS attribute (``bentoml.models.BentoModel``) so the build packages
it (BentoML issues 4702 and 5319). Its metadata carries the feature schema, from which the
request schema below is made: the generated OpenAPI names every feature and its type, and
pydantic refuses bad rows before they reach the model.

Development serving: ``bentoml serve service:Prediction --working-dir src --arg model_tag=TAG``.
"""

from pathlib import Path
from typing import Any

import bentoml
from pydantic import BaseModel, Field
from starlette.responses import Response

from training.serving.answers import Answers
from training.serving.card import Method, ModelCard
from training.serving.http import ServiceHTTP, configure_logs
from training.serving.keys import KeyStore
from training.serving.metrics import ServiceMetrics
from training.serving.predictor import one_thread_per_call, settle
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
METRICS = ServiceMetrics(CARD.model_tag)
ANSWERS = Answers(CARD, SETTINGS, METRICS)
# The request's row type is made from the model's features: a type only at run time.
Instances = ANSWERS.instances
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


async def _respond(method: Method, instances: list[Any]) -> Response:
    status, body = await ANSWERS.answer(method, instances)
    return Response(body, status, ANSWERS.headers, media_type="application/json")


@bentoml.service(
    name="prediction",
    http={"host": SETTINGS.service_host, "port": SETTINGS.service_port},
    workers=SETTINGS.service_workers,
    # The request timeout is ServiceHTTP's (a JSON 504 in our shape, counted as a 504);
    # BentoML's own, which answers outside our middleware, is only a backstop.
    traffic={"timeout": SETTINGS.request_timeout_s + 30},
    # Our middleware writes the access line (with X-Request-ID) for API requests only.
    logging={"access": {"enabled": False}},
    # BentoML's request metrics label each request by its path as written (a series per
    # made-up path); ours label the route, and ServiceHTTP serves /metrics (serving/metrics.py).
    metrics={"enabled": False},
    # No tracing exporter is configured; OpenTelemetry's middleware would still cost about a
    # third of a single-row request, so the API routes are excluded.
    tracing={
        "excluded_urls": [
            *("/predict", "/predict_proba", "/model", "/livez", "/readyz", "/metrics"),
            "/v2",  # the Open Inference Protocol's routes (a pattern: every /v2 path)
        ]
    },
)
class Prediction:
    """Predictions from one trained scikit-learn pipeline; every answer names its model."""

    model_ref = MODEL

    def __init__(self) -> None:
        one_thread_per_call()
        # The pipeline is unpickled (scikit-learn imported) only if its serving form cannot
        # answer alone: a linear model's worker never loads scikit-learn.
        # (On an instance BentoML hands the class's BentoModel out as the stored Model.)
        stored = self.model_ref
        ANSWERS.start(Path(stored.path), lambda: bentoml.sklearn.load_model(stored))
        settle()

    # bentoml.api is untyped for mypy; the methods below are typed all the same.
    @bentoml.api(route="/predict", output_spec=PredictResponse)  # type: ignore[untyped-decorator]
    async def predict(self, instances: Instances) -> Response:  # type: ignore[valid-type]
        """Predict each row: class labels as trained for classifiers, values for regressors."""
        return await _respond("predict", instances)

    @bentoml.api(route="/predict_proba", output_spec=ProbaResponse)  # type: ignore[untyped-decorator]
    async def predict_proba(self, instances: Instances) -> Response:  # type: ignore[valid-type]
        """Class probabilities of each row, keyed by class (classifiers only)."""
        return await _respond("predict_proba", instances)


# The decorators turned the class into a bentoml Service, which mypy cannot see.
Prediction.add_asgi_middleware(  # type: ignore[attr-defined]
    ServiceHTTP,
    max_body_bytes=SETTINGS.max_body_bytes,
    model_tag=CARD.model_tag,
    access_log_enabled=SETTINGS.access_log,
    observe=METRICS.observe,
    keys=KeyStore(SETTINGS.keys_path) if SETTINGS.require_api_key else None,
    timeout_s=SETTINGS.request_timeout_s,
    answers=ANSWERS,
    hold_file=SETTINGS.service_hold_file,
)

"""Prometheus metrics of the prediction service, labelled by model tag (served on /metrics).

Made with ``bentoml.metrics`` so BentoML's multi-process collection sums every worker.
``ServiceHTTP`` answers /metrics itself (``exposition``): BentoML's own request metrics are
off (src/service.py), because they label every request by the path as the client wrote it,
so each made-up path (a /v2 model name, say, sent through the edge before any key is
checked) would be a new series for as long as the server runs. Ours label the route.
"""

from __future__ import annotations

from typing import Any

import bentoml

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


async def exposition() -> tuple[bytes, bytes]:
    """The /metrics page of every worker, summed, and its content type."""
    from anyio.to_thread import run_sync
    from bentoml._internal.configuration.containers import BentoMLContainer

    client = BentoMLContainer.metrics_client.get()
    page: bytes = await run_sync(client.generate_latest)  # reads every worker's files
    return page, str(client.CONTENT_TYPE_LATEST).encode()


class ServiceMetrics:
    def __init__(self, model_tag: str) -> None:
        self.model_tag = model_tag
        labels = ["model_tag", "endpoint"]
        self.requests: Any = bentoml.metrics.Counter(
            name="prediction_requests",
            documentation="Requests answered, by status code.",
            labelnames=[*labels, "status"],
        )
        self.errors: Any = bentoml.metrics.Counter(
            name="prediction_errors",
            documentation="Requests answered with a 4xx or 5xx.",
            labelnames=[*labels, "status"],
        )
        self.latency: Any = bentoml.metrics.Histogram(
            name="prediction_request_duration_seconds",
            documentation="Time from request to response inside the service.",
            labelnames=labels,
            buckets=_LATENCY_BUCKETS,
        )
        self.rows: Any = bentoml.metrics.Counter(
            name="prediction_rows",
            documentation="Rows predicted.",
            labelnames=labels,
        )
        self.batch_rows: Any = bentoml.metrics.Histogram(
            name="prediction_batch_rows",
            documentation="Rows per model call (several requests' rows when batched).",
            labelnames=["model_tag", "method"],
            buckets=_BATCH_BUCKETS,
        )
        self.queue_wait: Any = bentoml.metrics.Histogram(
            name="prediction_queue_wait_seconds",
            documentation="Time a request waited for its batch to start.",
            labelnames=["model_tag", "method"],
            buckets=_LATENCY_BUCKETS,
        )

        # Labelled children looked up once: prometheus_client's labels() costs a few
        # microseconds a call, and a request makes five of them.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.model_tag, *labels)
        return child

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        code = str(status)
        self._child(self.requests, endpoint, code).inc()
        if status >= 400:
            self._child(self.errors, endpoint, code).inc()
        self._child(self.latency, endpoint).observe(seconds)

    def predicted(self, endpoint: str, rows: int) -> None:
        self._child(self.rows, endpoint).inc(rows)

    def batched(self, method: str, rows: int) -> None:
        self._child(self.batch_rows, method).observe(rows)

    def waited(self, method: str, seconds: float) -> None:
        self._child(self.queue_wait, method).observe(seconds)

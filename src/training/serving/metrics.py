"""Prometheus metrics of the prediction service, labelled by model tag (served on /metrics).

Made with ``bentoml.metrics`` so BentoML's multi-process collection sums every worker.
"""

from __future__ import annotations

from typing import Any

import bentoml

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


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

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        code = str(status)
        self.requests.labels(self.model_tag, endpoint, code).inc()
        if status >= 400:
            self.errors.labels(self.model_tag, endpoint, code).inc()
        self.latency.labels(self.model_tag, endpoint).observe(seconds)

    def predicted(self, endpoint: str, rows: int) -> None:
        self.rows.labels(self.model_tag, endpoint).inc(rows)

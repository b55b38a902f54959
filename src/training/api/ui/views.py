"""What the dashboard's pages show, worked out from the store's records: plain functions, no
HTTP, so each rule is tested on its own (metric columns, the compare table and its bars, the
plots' data, the confusion matrix's shades)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from training.store.records import ConfusionMatrix, Evaluation, MetricPoint, RunInfo
from training.store.search import Order

#: Metrics a row of the runs page shows when they are there, besides the ordering one.
MAIN_METRICS = ("accuracy", "f1_macro", "roc_auc", "r2", "rmse", "mae")
METRIC_COLUMNS = 4
#: Metrics where less is better (the compare page marks the best of each).
LOWER_IS_BETTER = ("log_loss", "rmse", "mae")
SHADES = 10  # classes of a confusion matrix cell's colour
ROC_GRID = 101
CV_PREFIX = "cv_fold_"


def number(value: Any) -> str:
    """A metric or parameter as people read it: four significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def summary_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """A run's metrics but the folds' (their latest is only the last fold: they are plotted
    whole instead)."""
    return {key: value for key, value in metrics.items() if not key.startswith(CV_PREFIX)}


def metric_columns(runs: list[RunInfo], order: Order) -> list[str]:
    """The ordering metric first, then the main ones the page's runs have."""
    present = {key for run in runs for key in run.metrics}
    columns = [order.key] if order.kind == "metric" else []
    columns += [m for m in MAIN_METRICS if m in present and m not in columns]
    return columns[:METRIC_COLUMNS]


# -- compare -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    values: list[str]
    differs: bool


@dataclass(frozen=True)
class Bar:
    text: str
    percent: float  # of the row's widest value
    negative: bool
    best: bool


@dataclass(frozen=True)
class MetricRow:
    key: str
    bars: list[Bar | None]  # None: the run lacks the metric


def param_rows(runs: list[RunInfo]) -> list[Row]:
    """Every parameter of any of the runs; ``differs`` when the runs do not all agree."""
    rows = []
    for key in sorted({key for run in runs for key in run.params}):
        values = [run.params.get(key, "") for run in runs]
        rows.append(Row(key, values, len(set(values)) > 1))
    return rows


def metric_rows(runs: list[RunInfo]) -> list[MetricRow]:
    """Latest metrics side by side, each as a bar against the row's largest magnitude."""
    rows = []
    for key in sorted({key for run in runs for key in summary_metrics(run.metrics)}):
        values = [run.metrics.get(key) for run in runs]
        present = [v for v in values if v is not None]
        widest = max((abs(v) for v in present), default=0.0) or 1.0
        lower = key in LOWER_IS_BETTER or key.endswith("_std")
        best = min(present) if lower else max(present)
        bars = [
            None
            if v is None
            else Bar(
                number(v), round(100 * abs(v) / widest, 1), v < 0, len(present) > 1 and v == best
            )
            for v in values
        ]
        rows.append(MetricRow(key, bars))
    return rows


# -- a run's plots -----------------------------------------------------------------------------


def shades(matrix: ConfusionMatrix) -> list[list[int]]:
    """Each cell's share of its actual class's rows, in ``SHADES`` steps (a CSS class each)."""
    result = []
    for counts in matrix.counts:
        total = sum(counts) or 1
        result.append([min(SHADES - 1, int(SHADES * c / total)) for c in counts])
    return result


def _histories(history: list[MetricPoint]) -> dict[str, dict[int, float]]:
    series: dict[str, dict[int, float]] = {}
    for point in history:
        series.setdefault(point.key, {})[point.step] = point.value
    return {key: steps for key, steps in series.items() if len(steps) > 1}


def step_plots(history: list[MetricPoint]) -> list[dict[str, Any]]:
    """Metrics logged at more than one step (the cross-validation folds), one plot for the
    scores between 0 and 1 and one for each other metric, whose scale would flatten them."""
    series = _histories(history)
    if not series:
        return []
    steps = sorted({step for points in series.values() for step in points})
    unit = {k: s for k, s in series.items() if all(0 <= v <= 1 for v in s.values())}
    groups = [("scores per fold" if len(unit) > 1 else next(iter(unit)), unit)] if unit else []
    groups += [(key, {key: s}) for key, s in series.items() if key not in unit]
    plots = []
    for title, members in groups:
        lines = [
            {"label": key.removeprefix(CV_PREFIX), "values": [s.get(step) for step in steps]}
            for key, s in sorted(members.items())
        ]
        plots.append({"title": title.removeprefix(CV_PREFIX), "x": steps, "series": lines})
    return plots


def roc_plot(evaluation: Evaluation) -> dict[str, Any] | None:
    """The ROC curves on one grid of false-positive rates (a plot shares its x values)."""
    if not evaluation.roc:
        return None
    grid = np.linspace(0, 1, ROC_GRID)
    curves = [
        {
            "label": f"{curve.label} (AUC {number(curve.auc)})",
            "values": np.interp(grid, curve.fpr, curve.tpr).round(4).tolist(),
        }
        for curve in evaluation.roc
    ]
    return {"x": grid.round(4).tolist(), "series": curves}


def residual_plots(evaluation: Evaluation) -> dict[str, Any] | None:
    found = evaluation.residuals
    if found is None:
        return None
    pairs = sorted(zip(found.actual, found.predicted, strict=True))
    centres = [(a + b) / 2 for a, b in zip(found.bins, found.bins[1:], strict=False)]
    return {
        "scatter": {"x": [a for a, _ in pairs], "predicted": [p for _, p in pairs]},
        "histogram": {"x": centres, "counts": found.counts},
    }


def plot_data(history: list[MetricPoint], evaluation: Evaluation | None) -> dict[str, Any]:
    """Everything the run page's script draws, embedded in the page as JSON."""
    return {
        "steps": step_plots(history),
        "roc": roc_plot(evaluation) if evaluation else None,
        "residuals": residual_plots(evaluation) if evaluation else None,
    }


def importance_bars(evaluation: Evaluation | None) -> list[tuple[str, str, float]]:
    """(feature, value, percent of the largest) for the importances table."""
    if evaluation is None or not evaluation.importances:
        return []
    top = max(i.value for i in evaluation.importances) or 1.0
    return [
        (i.feature, number(i.value), round(100 * i.value / top, 1)) for i in evaluation.importances
    ]

"""What the dashboard's pages show, worked out from records (``training.api.ui.views``)."""

from __future__ import annotations

from datetime import UTC, datetime

from training.api.ui import views
from training.store.records import (
    ConfusionMatrix,
    DatasetInfo,
    Evaluation,
    MetricPoint,
    Residuals,
    RocCurve,
    RunInfo,
    RunStatus,
)
from training.store.search import RunSearch

T = datetime(2026, 12, 3, tzinfo=UTC)


def _run(run_id: str, params: dict[str, str], metrics: dict[str, float]) -> RunInfo:
    return RunInfo(
        id=run_id,
        experiment="e",
        status=RunStatus.FINISHED,
        submitted_at=T,
        start_time=T,
        end_time=T,
        error=None,
        model_name="m",
        task="classification",
        dataset=DatasetInfo(name="iris"),
        environment={},
        model_tag=None,
        request=None,
        stage=None,
        progress=None,
        pid=None,
        host=None,
        params=params,
        metrics=metrics,
    )


def test_numbers_times_and_durations_read_as_people_read_them() -> None:
    assert [views.number(v) for v in (0.912345, 3, None, "x", float("nan"))] == [
        "0.9123", "3", "", "x", "nan"
    ]  # fmt: skip
    assert [views.duration(s) for s in (None, 3.21, 125, 7260)] == [
        "", "3.2 s", "2 min 5 s", "2 h 1 min"
    ]  # fmt: skip
    assert views.when(T) == "2026-12-03 00:00:00"


def test_the_runs_page_shows_the_order_metric_first_then_the_main_ones_it_has() -> None:
    runs = [_run("a", {}, {"accuracy": 0.9, "log_loss": 0.2, "cv_fold_accuracy": 0.8})]
    assert views.metric_columns(runs, RunSearch.parse(None, "metrics.log_loss").order) == [
        "log_loss", "accuracy"
    ]  # fmt: skip
    assert views.metric_columns(runs, RunSearch.parse().order) == ["accuracy"]


def test_compare_marks_differences_scales_bars_and_the_best_of_each_metric() -> None:
    runs = [
        _run("a", {"C": "1", "seed": "42"}, {"accuracy": 0.8, "log_loss": 0.4, "cv_fold_x": 1}),
        _run("b", {"C": "2", "seed": "42", "l1": "0"}, {"accuracy": 0.4, "log_loss": 0.2}),
    ]
    rows = {row.key: row for row in views.param_rows(runs)}
    assert rows["C"].differs and not rows["seed"].differs and rows["l1"].values == ["", "0"]
    metrics = {row.key: row.bars for row in views.metric_rows(runs)}
    assert set(metrics) == {"accuracy", "log_loss"}  # a fold's last value is no summary
    accuracy, loss = metrics["accuracy"], metrics["log_loss"]
    assert [b.percent for b in accuracy if b] == [100.0, 50.0]
    assert [b.best for b in accuracy if b] == [True, False]
    assert [b.best for b in loss if b] == [False, True]  # less is better


def test_confusion_shades_follow_each_actual_class() -> None:
    matrix = ConfusionMatrix(labels=["a", "b"], counts=[[10, 0], [5, 5]])
    assert views.shades(matrix) == [[9, 0], [5, 5]]


def test_fold_plots_put_scores_together_and_other_scales_apart() -> None:
    history = [
        MetricPoint(key=f"cv_fold_{key}", value=value * step, step=step, timestamp=T)
        for step in (1, 2, 3)
        for key, value in (("accuracy", 0.3), ("roc_auc", 0.3), ("rmse", 40.0))
    ] + [MetricPoint(key="accuracy", value=0.9, step=0, timestamp=T)]
    plots = views.step_plots(history)
    assert [p["title"] for p in plots] == ["scores per fold", "rmse"]
    assert plots[0]["x"] == [1, 2, 3] and [s["label"] for s in plots[0]["series"]] == [
        "accuracy", "roc_auc"
    ]  # fmt: skip
    assert plots[1]["series"][0]["values"] == [40.0, 80.0, 120.0]


def test_roc_curves_share_one_grid_and_residuals_are_sorted_by_the_actual_value() -> None:
    evaluation = Evaluation(
        rows=4,
        roc=[RocCurve(label="b", fpr=[0.0, 0.0, 1.0], tpr=[0.0, 1.0, 1.0], auc=1.0)],
        residuals=Residuals(
            actual=[3.0, 1.0],
            predicted=[2.5, 1.5],
            mean=0.0,
            std=0.5,
            mae=0.5,
            max_abs=0.5,
            quantiles={"p50": 0.0},
            bins=[-1.0, 0.0, 1.0],
            counts=[1, 1],
        ),
    )
    roc = views.roc_plot(evaluation)
    assert roc is not None and len(roc["x"]) == views.ROC_GRID and roc["x"][0] == 0.0
    assert roc["series"][0]["values"][-1] == 1.0 and "AUC 1" in roc["series"][0]["label"]
    plots = views.residual_plots(evaluation)
    assert plots is not None and plots["scatter"] == {"x": [1.0, 3.0], "predicted": [1.5, 2.5]}
    assert plots["histogram"] == {"x": [-0.5, 0.5], "counts": [1, 1]}
    assert views.plot_data([], None) == {"steps": [], "roc": None, "residuals": None}

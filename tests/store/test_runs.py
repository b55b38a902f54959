"""The run store on SQLite and PostgreSQL: lifecycle, params, metrics, search, registry."""

from __future__ import annotations

from typing import Any

import pytest

from training.errors import Conflict, NotFound, UserError
from training.store import search as query
from training.store.records import DatasetInfo
from training.store.registry import Registry
from training.store.runs import RunStore
from training.store.search import RunSearch


def new_run(store: RunStore, **overrides: object) -> str:
    fields: dict[str, object] = {
        "experiment": "exp",
        "model_name": "logistic_regression",
        "task": "classification",
        "dataset": DatasetInfo(name="iris"),
        "params": {"C": "1.0"},
    }
    fields.update(overrides)
    return store.create_run(**fields)  # type: ignore[arg-type]


def finished_run(store: RunStore, accuracy: float, tag: str | None = None) -> str:
    run_id = new_run(store)
    store.log_metrics(run_id, [("accuracy", accuracy, 0)])
    store.finish(run_id, "FINISHED", model_tag=tag, model_name=tag and tag.split(":")[0])
    return run_id


def test_a_run_goes_from_running_to_finished_with_its_model_version(
    store: RunStore, registry: Registry
) -> None:
    run_id = new_run(store, tags={"team": "vision"})
    run = store.get_run(run_id)
    assert (run.status, run.end_time, run.experiment, run.tags) == (
        "RUNNING",
        None,
        "exp",
        {"team": "vision"},
    )
    store.finish(run_id, "FINISHED", model_tag="iris-lr:v1", model_name="iris-lr")
    run = store.get_run(run_id)
    assert run.status == "FINISHED" and run.end_time is not None and run.duration_s is not None
    assert run.model_tag == "iris-lr:v1"
    assert [v.run_id for v in registry.list_models()] == [run_id]


def test_an_ended_run_cannot_end_again(store: RunStore) -> None:
    run_id = new_run(store)
    store.finish(run_id, "FAILED", error="boom")
    assert store.get_run(run_id).error == "boom"
    with pytest.raises(Conflict):
        store.finish(run_id, "FINISHED")


def test_parameters_are_immutable_once_recorded(store: RunStore) -> None:
    run_id = new_run(store)
    store.log_params(run_id, {"C": "1.0", "max_iter": "100"})  # same value again: fine
    with pytest.raises(Conflict, match="cannot change"):
        store.log_params(run_id, {"C": "2.0"})
    assert store.get_run(run_id).params == {"C": "1.0", "max_iter": "100"}


def test_metrics_keep_their_step_history_and_expose_the_latest(store: RunStore) -> None:
    run_id = new_run(store)
    store.log_metrics(run_id, [("cv_fold_accuracy", 0.8, 1), ("cv_fold_accuracy", 0.9, 2)])
    store.log_metrics(run_id, [("cv_fold_accuracy", 0.7, 3)])
    history = [(p.step, p.value) for p in store.metric_history(run_id)]
    assert history == [(1, 0.8), (2, 0.9), (3, 0.7)]
    assert store.get_run(run_id).metrics == {"cv_fold_accuracy": 0.7}


def test_a_unique_prefix_finds_a_run_and_an_unknown_id_is_not_found(store: RunStore) -> None:
    run_id = new_run(store)
    assert store.get_run(run_id[:8]).id == run_id
    with pytest.raises(NotFound):
        store.get_run("0" * 32)


def test_search_filters_and_orders_by_metric_with_stable_keyset_pages(store: RunStore) -> None:
    ids = {acc: finished_run(store, acc) for acc in (0.5, 0.95, 0.91, 0.99, 0.93, 0.97)}
    search = RunSearch.parse("metrics.accuracy > 0.9", "metrics.accuracy desc")
    first = store.search(search, limit=2)
    assert [r.metrics["accuracy"] for r in first.runs] == [0.99, 0.97]
    assert first.next_page_token
    # A run arriving between pages must not shift or repeat what the next page shows.
    finished_run(store, 0.98)
    second = store.search(search, limit=2, page_token=first.next_page_token)
    assert [r.metrics["accuracy"] for r in second.runs] == [0.95, 0.93]
    third = store.search(search, limit=2, page_token=second.next_page_token)
    assert [r.id for r in third.runs] == [ids[0.91]] and third.next_page_token is None


@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_a_filter_on_one_metric_and_order_on_another_pages_exactly(
    store: RunStore, direction: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages served from the bounded window (see RunSearch.window_query) and from the full
    queries must join up into one exact order, ties and runs without the metric included."""
    monkeypatch.setattr(query, "WINDOW", 5)
    expected_with, expected_without = [], []
    for i in range(30):
        run_id = new_run(store)
        accuracy = (i * 7 % 10) / 10  # 0.0 .. 0.9, six in ten pass the filter
        metrics = [("accuracy", accuracy, 0)]
        if i % 5:  # every fifth run has no roc_auc: it must come after the rest
            metrics.append(("roc_auc", (i * 3 % 8) / 8, 0))  # plenty of ties
        store.log_metrics(run_id, metrics)
        if accuracy > 0.35:
            if i % 5:
                expected_with.append((metrics[1][1], run_id))
            else:
                expected_without.append(run_id)
    expected_with.sort(reverse=direction == "desc")
    expected = [run_id for _, run_id in expected_with] + sorted(expected_without)

    full_queries = 0
    page_queries = RunSearch.page_queries

    def counted(self: RunSearch, limit: int, page_token: str | None) -> list[Any]:
        nonlocal full_queries
        full_queries += 1
        return page_queries(self, limit, page_token)

    monkeypatch.setattr(RunSearch, "page_queries", counted)
    search = RunSearch.parse("metrics.accuracy > 0.35", f"metrics.roc_auc {direction}")
    seen, token, pages = [], None, 0
    while pages <= len(expected):  # a token that does not advance must fail, not loop
        page = store.search(search, limit=3, page_token=token)
        seen += [r.id for r in page.runs]
        pages += 1
        if not (token := page.next_page_token):
            break
    assert seen == expected
    assert 0 < full_queries < pages  # both paths served pages


def test_search_by_params_status_and_experiment(store: RunStore) -> None:
    a = new_run(store, params={"C": "1.0"}, experiment="one")
    b = new_run(store, params={"C": "2.0"}, experiment="two")
    store.finish(b, "FAILED", error="x")
    assert [r.id for r in store.search(RunSearch.parse("params.C = '2.0'")).runs] == [b]
    assert [r.id for r in store.search(RunSearch.parse(status="RUNNING")).runs] == [a]
    assert [r.id for r in store.search(RunSearch.parse(experiment="one")).runs] == [a]
    assert [
        r.id for r in store.search(RunSearch.parse("status != FAILED and experiment = one")).runs
    ] == [a]


def test_runs_without_the_ordering_metric_come_last(store: RunStore) -> None:
    without = new_run(store)
    low, high = finished_run(store, 0.1), finished_run(store, 0.9)
    page = store.search(RunSearch.parse(None, "metrics.accuracy desc"), limit=2)
    assert [r.id for r in page.runs] == [high, low]
    rest = store.search(
        RunSearch.parse(None, "metrics.accuracy desc"), limit=2, page_token=page.next_page_token
    )
    assert [r.id for r in rest.runs] == [without]


def test_newest_first_by_default_and_tokens_refuse_another_ordering(store: RunStore) -> None:
    ids = [new_run(store) for _ in range(3)]
    page = store.search(RunSearch.parse(), limit=2)
    assert [r.id for r in page.runs] == ids[::-1][:2]
    assert page.next_page_token is not None
    with pytest.raises(UserError, match="another ordering"):
        store.search(RunSearch.parse(None, "metrics.accuracy"), page_token=page.next_page_token)
    with pytest.raises(UserError, match="page_token"):
        store.search(RunSearch.parse(), page_token="garbage!")


def test_promote_rollback_and_history(store: RunStore, registry: Registry) -> None:
    finished_run(store, 0.9, "m:v1")
    finished_run(store, 0.95, "m:v2")
    finished_run(store, 0.97, "m:v3")
    registry.promote("m:v1", "production")
    registry.promote("m:v2", "production")
    registry.promote("m:v3", "production")
    assert registry.rollback("production").model_tag == "m:v2"
    assert registry.rollback("production").model_tag == "m:v1"
    with pytest.raises(UserError, match="no previous target"):
        registry.rollback("production")
    history = registry.get_alias("production").history
    assert [(m.action, m.from_tag, m.to_tag) for m in history] == [
        ("promote", None, "m:v1"),
        ("promote", "m:v1", "m:v2"),
        ("promote", "m:v2", "m:v3"),
        ("rollback", "m:v3", "m:v2"),
        ("rollback", "m:v2", "m:v1"),
    ]
    assert [v.aliases for v in registry.list_models() if v.tag == "m:v1"] == [["production"]]


def test_promoting_the_current_target_again_is_not_a_move(
    store: RunStore, registry: Registry
) -> None:
    finished_run(store, 0.9, "m:v1")
    finished_run(store, 0.95, "m:v2")
    registry.promote("m:v1", "production")
    registry.promote("m:v2", "production")
    registry.promote("m:v2", "production")
    assert len(registry.get_alias("production").history) == 2
    assert registry.rollback("production").model_tag == "m:v1"


def test_only_registered_models_can_be_promoted(registry: Registry) -> None:
    with pytest.raises(NotFound, match="finished runs"):
        registry.promote("ghost:v1", "production")
    with pytest.raises(UserError, match="not a valid name"):
        registry.promote("ghost:v1", "Prod uction")
    with pytest.raises(UserError, match="not a valid name"):
        registry.promote("ghost:v1", "prod\n")


def test_only_a_finished_run_records_its_evaluation(store: RunStore) -> None:
    from training.store.records import ConfusionMatrix, Evaluation

    found = Evaluation(
        rows=2, confusion=ConfusionMatrix(labels=["a", "b"], counts=[[1, 0], [0, 1]])
    )
    failed = new_run(store)
    with pytest.raises(ValueError, match="only a finished run"):
        store.finish(failed, "FAILED", error="boom", evaluation=found)
    assert store.get_run(failed).status == "RUNNING"  # nothing was written
    store.finish(failed, "FAILED", error="boom")
    assert store.evaluation(failed) is None
    finished = new_run(store)
    store.finish(finished, "FINISHED", evaluation=found)
    assert store.evaluation(finished) == found
    with pytest.raises(NotFound):
        store.evaluation("0123456789abcdef")

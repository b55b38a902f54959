"""The search language: what it accepts and the one-line errors for what it does not."""

from __future__ import annotations

import pytest

from training.errors import UserError
from training.store.search import Condition, parse_filter, parse_order


def test_conditions_joined_by_and() -> None:
    assert parse_filter("metrics.accuracy >= 0.9 AND params.C = '1.0' and status = FINISHED") == [
        Condition("metric", "accuracy", ">=", 0.9),
        Condition("param", "C", "=", "1.0"),
        Condition("attribute", "status", "=", "FINISHED"),
    ]
    assert parse_filter('tags.team == "vision team"') == [
        Condition("tag", "team", "=", "vision team")
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics.accuracy > high", "compares with a number"),
        ("params.C > 1", "supports only = and !="),
        ("colour = red", "unknown key 'colour'"),
        ("metrics.accuracy >", "incomplete condition"),
        ("metrics.accuracy > 0.9 or status = FAILED", "expected 'and'"),
        ("metrics.accuracy ~ 3", "cannot read"),
    ],
)
def test_malformed_filters_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        parse_filter(text)
    assert info.value.field == "filter"


def test_order_defaults_and_directions() -> None:
    assert parse_order(None).text == "submitted_at desc"
    assert parse_order("metrics.rmse").text == "metrics.rmse asc"
    assert parse_order("metrics.accuracy DESC").text == "metrics.accuracy desc"
    with pytest.raises(UserError, match="cannot order by"):
        parse_order("params.C")
    with pytest.raises(UserError, match="expected KEY"):
        parse_order("start_time sideways")


def _token(order: str, value: object, run_id: str = "ab12") -> str:
    import base64
    import json

    raw = json.dumps([order, value, run_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("order", "value", "run_id"),
    [
        ("submitted_at desc", "2026-01-01T00:00:00", "ab12"),  # no time zone
        ("submitted_at desc", "0001-01-01T00:00:00+14:00", "ab12"),  # out of range once in UTC
        ("submitted_at desc", "yesterday", "ab12"),
        ("metrics.accuracy asc", 10**400, "ab12"),
        ("metrics.accuracy asc", True, "ab12"),
        ("metrics.accuracy asc", 0.5, "'; DROP TABLE runs; --"),
    ],
)
def test_forged_page_tokens_are_refused_not_passed_to_the_database(
    order: str, value: object, run_id: str
) -> None:
    from training.store.search import RunSearch

    search = RunSearch.parse(None, order)
    with pytest.raises(UserError, match="page_token"):
        search.page_queries(10, _token(search.order.text, value, run_id))

"""The search language: what it accepts and the one-line errors for what it does not."""

from __future__ import annotations

import pytest

from training.errors import UserError
from training.query import Condition, parse_filter, parse_order


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
    assert parse_order(None).text == "start_time desc"
    assert parse_order("metrics.rmse").text == "metrics.rmse asc"
    assert parse_order("metrics.accuracy DESC").text == "metrics.accuracy desc"
    with pytest.raises(UserError, match="cannot order by"):
        parse_order("params.C")
    with pytest.raises(UserError, match="expected KEY"):
        parse_order("start_time sideways")

"""The run search language shared by ``training runs list`` and ``GET /runs``.

Filter: conditions joined by ``and``, in the spirit of MLflow's search syntax::

    metrics.accuracy > 0.9 and params.C = '1.0' and status = FINISHED and tags.team = vision
    sweep = 3f2a... and worker = gpu-1

Order: ``submitted_at`` (default, newest first; it never changes, so pages stay put while the
queue moves), ``start_time``, ``end_time`` or ``metrics.<key>``, optionally
followed by ``asc`` or ``desc``. Pages are keyset pages: the token carries the last row's sort
value and run id, so a page stays correct while new runs arrive (no OFFSET).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, exists, null, or_, select, true
from sqlalchemy.orm import aliased

from training.errors import UserError
from training.store.page_token import decode as page_token_decode
from training.store.page_token import encode as page_token_encode
from training.store.records import checked_text
from training.store.tables import Experiment, LatestMetric, Param, Run, Tag

ATTRIBUTES: dict[str, Any] = {
    "status": Run.status,
    "experiment": Experiment.name,
    "model": Run.model_name,
    "dataset": Run.dataset_name,
    "task": Run.task,
    "model_tag": Run.model_tag,
    "run_id": Run.id,
    "sweep": Run.sweep_id,
    "worker": Run.worker,
}
ORDER_ATTRIBUTES: dict[str, Any] = {
    "submitted_at": Run.submitted_at,
    "start_time": Run.start_time,
    "end_time": Run.end_time,
}
NEVER_NULL = frozenset({"submitted_at", "start_time"})
# A search's ceiling: each metric condition is one more join, and SQLite refuses a query of
# over 64 tables (PostgreSQL's planner slows down long before): 20 keeps every query small.
FILTER_MAX_CONDITIONS = 20
FILTER_MAX_CHARS = 2000
NAME_MAX_CHARS = 250  # experiment, order key: the run store's longest names
EQUALITY_OPS = ("=", "!=")
OPS = ("=", "!=", "<", "<=", ">", ">=")

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'[^']*'|"[^"]*")
      | (?P<op>!=|==|<=|>=|=|<|>)
      | (?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w.]))
      | (?P<word>[A-Za-z0-9_][\w.\-:]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Condition:
    kind: Literal["metric", "param", "tag", "attribute"]
    key: str
    op: str
    value: str | float


@dataclass(frozen=True)
class Order:
    kind: Literal["metric", "attribute"]
    key: str
    descending: bool

    @property
    def text(self) -> str:
        prefix = "metrics." if self.kind == "metric" else ""
        return f"{prefix}{self.key} {'desc' if self.descending else 'asc'}"


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise UserError(f"filter: cannot read {text[pos:].strip()!r}", field="filter")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


def _split_key(word: str) -> tuple[Literal["metric", "param", "tag", "attribute"], str]:
    for prefix, kind in (("metrics.", "metric"), ("params.", "param"), ("tags.", "tag")):
        if word.startswith(prefix) and len(word) > len(prefix):
            return kind, word[len(prefix) :]  # type: ignore[return-value]
    if word in ATTRIBUTES:
        return "attribute", word
    raise UserError(
        f"filter: unknown key {word!r}; use metrics.<name>, params.<name>, tags.<name> "
        f"or one of {', '.join(ATTRIBUTES)}",
        field="filter",
    )


def parse_filter(text: str | None) -> list[Condition]:
    if not text or not text.strip():
        return []
    if len(text) > FILTER_MAX_CHARS:
        raise UserError(
            f"filter: at most {FILTER_MAX_CHARS} characters, got {len(text)}", field="filter"
        )
    checked_text(text, "filter")
    tokens = _tokens(text)
    conditions: list[Condition] = []
    i = 0
    while True:
        if i + 3 > len(tokens):
            raise UserError(
                f"filter: incomplete condition in {text!r}; expected KEY OP VALUE", field="filter"
            )
        (key_kind, key), (op_kind, op), (value_kind, raw) = tokens[i : i + 3]
        if key_kind != "word":
            raise UserError(f"filter: expected a key, got {key!r}", field="filter")
        if op_kind != "op":
            raise UserError(
                f"filter: expected an operator after {key!r}, got {op!r}", field="filter"
            )
        if value_kind == "op":
            raise UserError(f"filter: expected a value after {key} {op}", field="filter")
        kind, name = _split_key(key)
        op = "=" if op == "==" else op
        value: str | float
        if kind == "metric":
            if value_kind != "number":
                raise UserError(
                    f"filter: {key} compares with a number, got {raw!r}", field="filter"
                )
            value = float(raw)
        else:
            if op not in EQUALITY_OPS:
                raise UserError(f"filter: {key} supports only = and !=, got {op!r}", field="filter")
            value = raw[1:-1] if value_kind == "string" else raw
        conditions.append(Condition(kind, name, op, value))
        if len(conditions) > FILTER_MAX_CONDITIONS:
            raise UserError(f"filter: at most {FILTER_MAX_CONDITIONS} conditions", field="filter")
        i += 3
        if i == len(tokens):
            return conditions
        if tokens[i] != ("word", tokens[i][1]) or tokens[i][1].lower() != "and":
            raise UserError(f"filter: expected 'and' before {tokens[i][1]!r}", field="filter")
        i += 1


def parse_order(text: str | None) -> Order:
    if not text or not text.strip():
        return Order("attribute", "submitted_at", descending=True)
    parts = text.split()
    if len(parts) > 2 or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc")):
        raise UserError(f"order: expected KEY [asc|desc], got {text!r}", field="order_by")
    key = parts[0]
    if key.startswith("metrics.") and len(key) > len("metrics."):
        kind: Literal["metric", "attribute"] = "metric"
        key = key[len("metrics.") :]
        default_desc = False
    elif key in ORDER_ATTRIBUTES:
        kind, default_desc = "attribute", True
    else:
        raise UserError(
            f"order: cannot order by {key!r}; use metrics.<name>, {', '.join(ORDER_ATTRIBUTES)}",
            field="order_by",
        )
    descending = parts[1].lower() == "desc" if len(parts) == 2 else default_desc
    return Order(kind, key, descending)


def _compare(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    result: ColumnElement[bool]
    match op:
        case "=":
            result = column == value
        case "!=":
            result = column != value
        case "<":
            result = column < value
        case "<=":
            result = column <= value
        case ">":
            result = column > value
        case _:
            result = column >= value
    return result


WINDOW = 2_000  # runs in sort order that window_query looks through before giving up


@dataclass(frozen=True)
class _Pages:
    """The parts of a page query: filtered runs, those with a sort value, the token's row."""

    order: Order
    query: Select[Any]
    present: Select[Any]
    sort: Any
    tie: Any
    missing: ColumnElement[bool] | None
    last_value: Any
    last_id: str | None

    def order_of(self, sort: Any, tie: Any) -> tuple[Any, Any]:
        return (sort.desc(), tie.desc()) if self.order.descending else (sort.asc(), tie.asc())

    @property
    def ordering(self) -> tuple[Any, Any]:
        return self.order_of(self.sort, self.tie)

    def after_token(self, sort: Any, tie: Any) -> ColumnElement[bool]:
        """Rows after the previous page's last one (every row when there is no token)."""
        if self.last_id is None or self.last_value is None:
            return true()

        def after(column: Any, value: Any) -> ColumnElement[bool]:
            result: ColumnElement[bool] = (
                column < value if self.order.descending else column > value
            )
            return result

        return or_(
            after(sort, self.last_value), and_(sort == self.last_value, after(tie, self.last_id))
        )


@dataclass(frozen=True)
class RunSearch:
    """A parsed search: build the id query for one page and the token for the next."""

    conditions: list[Condition]
    order: Order

    @classmethod
    def parse(
        cls,
        filter_text: str | None = None,
        order_by: str | None = None,
        *,
        experiment: str | None = None,
        status: str | None = None,
    ) -> RunSearch:
        for field, text in (("order_by", order_by), ("experiment", experiment), ("status", status)):
            if text is not None and len(text) > NAME_MAX_CHARS:
                raise UserError(f"{field}: at most {NAME_MAX_CHARS} characters", field=field)
            if text is not None:
                checked_text(text, field)
        conditions = parse_filter(filter_text)
        if experiment:
            conditions.append(Condition("attribute", "experiment", "=", experiment))
        if status:
            conditions.append(Condition("attribute", "status", "=", status.upper()))
        return cls(conditions, parse_order(order_by))

    def _filtered(self) -> tuple[Select[Any], dict[str, Any]]:
        """Run ids matching every condition; one inner join per filtered metric."""
        query = select(Run.id).join(Experiment, Run.experiment_id == Experiment.id)
        metric_joins: dict[str, Any] = {}
        for cond in self.conditions:
            if cond.kind == "metric":
                if cond.key not in metric_joins:
                    metric = aliased(LatestMetric)
                    metric_joins[cond.key] = metric
                    query = query.join(
                        metric, and_(metric.run_id == Run.id, metric.key == cond.key)
                    )
                query = query.where(_compare(metric_joins[cond.key].value, cond.op, cond.value))
            elif cond.kind in ("param", "tag"):
                table = Param if cond.kind == "param" else Tag
                query = query.where(
                    exists().where(
                        table.run_id == Run.id,
                        table.key == cond.key,
                        _compare(table.value, cond.op, cond.value),
                    )
                )
            else:
                query = query.where(_compare(ATTRIBUTES[cond.key], cond.op, cond.value))
        return query, metric_joins

    def _pages(self, page_token: str | None) -> _Pages:
        order = self.order
        query, metric_joins = self._filtered()
        tie: Any = Run.id
        missing: ColumnElement[bool] | None = None
        if order.kind == "metric":
            metric = metric_joins.get(order.key)
            present = query
            if metric is None:  # not filtered on: runs lacking the metric still belong
                metric = aliased(LatestMetric)
                present = query.join(metric, and_(metric.run_id == Run.id, metric.key == order.key))
                missing = ~exists().where(
                    LatestMetric.run_id == Run.id, LatestMetric.key == order.key
                )
            # The metric row's own run id breaks ties, so the (key, value, run_id) index gives
            # the whole order without a sort.
            sort, tie = metric.value, metric.run_id
        else:
            sort = ORDER_ATTRIBUTES[order.key]
            present = query
            if order.key not in NEVER_NULL:
                present = query.where(sort.is_not(None))
                missing = sort.is_(None)
        last_value, last_id = (
            page_token_decode(page_token, order.text, by_time=order.kind == "attribute")
            if page_token
            else (None, None)
        )
        return _Pages(order, query, present, sort, tie, missing, last_value, last_id)

    def page_queries(self, limit: int, page_token: str | None) -> list[Select[Any]]:
        """Queries of (run id, sort value) rows that, run in turn, give one page (+1 row).

        Runs with a sort value come first, in index order; runs without one (no such metric,
        no end time yet) follow, by run id. Keeping the two apart lets each walk an index
        instead of sorting every match, which is what keeps a page fast at 100,000 runs.
        """
        p = self._pages(page_token)
        queries: list[Select[Any]] = []
        if p.last_id is None or p.last_value is not None:
            present = p.present.where(p.after_token(p.sort, p.tie))
            queries.append(present.add_columns(p.sort).order_by(*p.ordering).limit(limit + 1))
        if p.missing is not None:
            rest = p.query.where(p.missing)
            if p.last_id is not None and p.last_value is None:
                rest = rest.where(Run.id > p.last_id)
            queries.append(rest.add_columns(null()).order_by(Run.id).limit(limit + 1))
        return queries

    def window_query(self, limit: int, page_token: str | None) -> Select[Any] | None:
        """A first try at the page within the next ``WINDOW`` runs in sort order, or None.

        A filter on one metric and an order on another leave the planner a choice SQLite gets
        wrong for loose filters: it collects every match through the filter's index and sorts
        them (0.5 s at 100,000 runs when half match). Bounding the order's index range to its
        next ``WINDOW`` values makes it walk that index instead and stop after a page (2 ms).
        Those runs are a prefix of the order, so a full page (``limit`` + 1 rows) found there
        is exact; a shorter one is not, and the caller runs ``page_queries`` (a tight filter
        then costs one bounded walk more, ~15 ms).
        """
        filtered = {c.key for c in self.conditions if c.kind == "metric"}
        if self.order.kind != "metric" or not filtered - {self.order.key}:
            return None
        p = self._pages(page_token)
        if p.last_id is not None and p.last_value is None:
            return None  # past the runs with a value: only the by-id rest is left
        edge = aliased(LatestMetric)
        bound = (
            select(edge.value)
            .where(edge.key == self.order.key, p.after_token(edge.value, edge.run_id))
            .order_by(*p.order_of(edge.value, edge.run_id))
            .limit(1)
            .offset(WINDOW - 1)
            .scalar_subquery()
        )
        within = p.sort >= bound if self.order.descending else p.sort <= bound
        present = p.present.where(p.after_token(p.sort, p.tie), within)
        return present.add_columns(p.sort).order_by(*p.ordering).limit(limit + 1)

    def next_token(self, last_id: str, last_value: Any) -> str:
        return page_token_encode(self.order.text, last_value, last_id)

"""Keyset page tokens: the last row of a page (its sort value and run id) and the ordering it
was issued for, carried by the client to the next page.

Tokens come from clients, so ``decode`` checks every part: a forged value ends as a 400, never
reaches the database as something it refuses.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from datetime import UTC, datetime
from typing import Any

from training.errors import UserError
from training.store.records import RUN_ID


def encode(order_text: str, value: Any, run_id: str) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = json.dumps([order_text, value, run_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: str, order_text: str, *, by_time: bool) -> tuple[Any, str]:
    """(sort value, run id) of the previous page's last row. ``by_time``: the order is by a
    timestamp (else by a metric's number)."""
    foreign = UserError("page_token: not a token this server issued", field="page_token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        issued_for, value, run_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise foreign from exc
    if issued_for != order_text:
        raise UserError(
            "page_token: issued for another ordering; start again without it", field="page_token"
        )
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise foreign
    if value is None:
        return None, run_id
    try:
        if by_time:
            value = datetime.fromisoformat(value)
            if value.tzinfo is None:
                raise foreign
            value = value.astimezone(UTC)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise foreign
        else:
            value = float(value)
            if not math.isfinite(value):
                raise foreign
    except (TypeError, ValueError, OverflowError) as exc:
        raise foreign from exc
    return value, run_id

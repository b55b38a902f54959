"""The dashboard's forms: urlencoded bodies read within a limit, and the training form turned into
the one ``TrainRequest`` the API and the CLI take (so it is checked by the same rules)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError
from starlette.requests import Request

from training.api.deps import media_of
from training.api.errors import invalid_request
from training.errors import TooLarge, UnsupportedMediaType, UserError
from training.learning.estimators import parse_param_value
from training.learning.request import TrainRequest

FORM_MAX_BYTES = 64 * 1024
FORM_MAX_FIELDS = 100
URLENCODED = b"application/x-www-form-urlencoded"
#: The training form's fields that go to the request as they are typed (blank: the default).
PLAIN_FIELDS = ("dataset", "model", "target", "task", "experiment", "cv", "test_size", "seed")


@dataclass(frozen=True)
class Fields:
    values: dict[str, list[str]]

    def get(self, name: str) -> str:
        """The field's first value, stripped ("" when absent)."""
        found = self.values.get(name)
        return found[0].strip() if found else ""

    def all(self, name: str) -> list[str]:
        return self.values.get(name, [])


async def read_form(request: Request) -> Fields:
    """A form's fields, at most ``FORM_MAX_BYTES`` of them; another media type is a 415."""
    if media_of(request) != URLENCODED:
        raise UnsupportedMediaType("send the form as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX_BYTES:
            raise TooLarge(f"the form is larger than {FORM_MAX_BYTES} bytes")
    try:
        text = body.decode("utf-8")
        values = parse_qs(text, keep_blank_values=True, max_num_fields=FORM_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"the form cannot be read: {exc}") from exc
    return Fields(values)


def _pairs(text: str, field: str) -> dict[str, str]:
    """``key=value`` lines (blank lines skipped)."""
    pairs: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise UserError(
                f"{field}: line {number}: expected key=value, got {line!r}", field=field
            )
        pairs[key.strip()] = value.strip()
    return pairs


def train_request(fields: Fields) -> TrainRequest:
    """The training form as a request: parameters read as `--param` reads them (JSON values
    where they parse), tags as text; a refusal names the field as POST /runs does."""
    data: dict[str, Any] = {name: fields.get(name) for name in PLAIN_FIELDS if fields.get(name)}
    params = _pairs(fields.get("params"), "params")
    data["params"] = {key: parse_param_value(value) for key, value in params.items()}
    data["tags"] = _pairs(fields.get("tags"), "tags")
    try:
        return TrainRequest.model_validate(data)
    except ValidationError as exc:
        message, problems = invalid_request(exc.errors())
        raise UserError(message, field=problems[0].field) from exc


def form_values(fields: Fields) -> dict[str, str]:
    """What the visitor typed, to show the form again as it was after a refusal."""
    return {name: fields.get(name) for name in (*PLAIN_FIELDS, "params", "tags")}

"""Errors a person or a client caused and can fix: shown as one line, never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Something the caller asked for that cannot be done; the message says what to change."""

    #: HTTP status a web layer answers with for this error.
    status_code = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(UserError):
    status_code = 404


class Conflict(UserError):
    status_code = 409


class SchemaOutOfDate(UserError):
    """The database is not at the migration head; the message names the command that fixes it."""

    status_code = 503


class Interrupted(BaseException):
    """Raised in a training process on SIGTERM or a cancel; the run is recorded KILLED.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it.
    """


class ServiceGone(Interrupted):
    """Raised in a job process whose training service died: the run is recorded FAILED ("the
    training service stopped"), not KILLED as a user's cancel would be."""


class TrainingFailed(Exception):
    """A run that started and then failed; it is recorded with this status and error."""

    def __init__(self, run_id: str, status: str, error: str) -> None:
        super().__init__(error)
        self.run_id, self.status, self.error = run_id, status, error


class Unprocessable(UserError):
    """Well-formed request, unusable content (a malformed CSV upload)."""

    status_code = 422


class TooLarge(UserError):
    status_code = 413


class UnsupportedMediaType(UserError):
    """A body in another media type than the route takes."""

    status_code = 415


class Busy(UserError):
    """The queue is full; try again later."""

    status_code = 429


class Unavailable(Exception):
    """A part the request needs is busy or unreachable (the run store): nothing was done, and
    the same request may succeed in a moment."""

    status_code = 503
    retry_after_s = 5

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

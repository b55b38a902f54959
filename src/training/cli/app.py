"""`training`: the command line. Mistakes end with one readable line and a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import NoReturn

from training.errors import Interrupted, TrainingFailed, Unavailable, UserError

EXIT_FAILED = 1  # the command ran and what it did failed (a run recorded FAILED)
EXIT_USAGE = 2  # the request was wrong; nothing was done
EXIT_TEMPFAIL = 75  # a part it needs is busy or down (sysexits' EX_TEMPFAIL): try again
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def install_signal_handlers() -> None:
    """SIGTERM takes the same path as Ctrl-C, so a stopped run is recorded KILLED.

    SIGINT is set explicitly too: a process started in the background by a non-interactive
    shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)


def build_parser() -> argparse.ArgumentParser:
    from training.cli import (
        admin,
        build,
        cluster,
        controller,
        deployments,
        keys,
        runs,
        serve,
        sweeps,
        train,
        up,
    )

    parser = _Parser(
        prog="training",
        description="Train scikit-learn models, record every run, register and serve them.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    for module in (
        train,
        sweeps,
        runs,
        deployments,
        build,
        keys,
        serve,
        cluster,
        up,
        controller,
        admin,
    ):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, stream=sys.stderr)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (KeyboardInterrupt, Interrupted):
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        line, code = _failure(exc)
        sys.stderr.write(f"error: {line}\n")
        return code


def _failure(exc: Exception) -> tuple[str, int]:
    """The one line a failure is told in, and the exit code it ends with."""
    if isinstance(exc, UserError):  # the request was wrong; nothing was done
        return exc.message, EXIT_USAGE
    if isinstance(exc, Unavailable):
        return exc.message, EXIT_TEMPFAIL
    if isinstance(exc, TrainingFailed):  # the run is recorded with this status and error
        return f"run {exc.run_id} {exc.status}: {exc.error}", EXIT_FAILED
    return f"{_one_line(exc)} (rerun with --debug for details)", EXIT_FAILED


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__

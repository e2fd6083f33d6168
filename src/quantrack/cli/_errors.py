"""How the command line reports failure: one clear line on stderr and a non-zero exit code.

Every command runs inside :class:`QuantrackGroup`, which catches what a command raises
and turns it into ``error: <message>`` on stderr, with an exit code naming the kind of
failure (below). The traceback is printed only with ``--debug`` (or ``QUANTRACK_DEBUG=1``),
because a researcher needs the reason, not the stack, and a bug report needs the stack.

Exit codes::

    0   success
    1   a quantrack error (a lifecycle rule refused the change, ...)
    2   bad input: a usage error, a malformed --where, an ambiguous id prefix
    3   not found: an unknown experiment, batch or artifact id, a missing workspace
    4   the workspace is busy: another process held the database past the timeout
    5   damaged artifacts: ``artifacts verify`` found content that no longer matches its hash
    70  an internal error (a bug in quantrack: please report it with the --debug output)
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from quantrack.domain import (
    ArtifactNotFound,
    BatchNotFound,
    ExperimentNotFound,
    IntegrityError,
    InvalidArtifactId,
    InvalidFilter,
    InvalidParams,
    QuantrackError,
    WorkspaceBusy,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_BUSY",
    "EXIT_DAMAGED",
    "EXIT_ERROR",
    "EXIT_INTERNAL",
    "EXIT_NOT_FOUND",
    "CliError",
    "QuantrackGroup",
    "exit_code_for",
    "report_error",
]

EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_BUSY = 4
EXIT_DAMAGED = 5
EXIT_INTERNAL = 70


class CliError(QuantrackError):
    """A problem with what was typed at the command line, with the exit code to use.

    ``detail`` lines (a caret under the offending column, candidate ids) follow the
    one-line message.
    """

    def __init__(self, message: str, *, exit_code: int = EXIT_BAD_INPUT, detail: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.detail = detail


def exit_code_for(exc: BaseException) -> int:
    """The exit code that names ``exc``'s kind of failure (see the module docstring)."""
    if isinstance(exc, CliError):
        return exc.exit_code
    if isinstance(exc, ExperimentNotFound | BatchNotFound | ArtifactNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, WorkspaceBusy):
        return EXIT_BUSY
    if isinstance(exc, IntegrityError):
        return EXIT_DAMAGED
    if isinstance(exc, InvalidFilter | InvalidParams | InvalidArtifactId):
        return EXIT_BAD_INPUT
    if isinstance(exc, QuantrackError):
        return EXIT_ERROR
    return EXIT_INTERNAL


def _debug_requested(ctx: Any) -> bool:
    if getattr(ctx.find_root().obj, "debug", False):
        return True
    return os.environ.get("QUANTRACK_DEBUG", "") not in ("", "0")


def report_error(exc: BaseException, *, debug: bool) -> int:
    """Print ``exc`` as ``error: ...`` on stderr (with the traceback when ``debug``);
    return the exit code.
    """
    code = exit_code_for(exc)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, QuantrackError):
        message = str(exc)
    else:
        message = f"internal error: {type(exc).__name__}: {exc}"
        if not debug:
            message += " (rerun with --debug for the traceback, and please report it)"
    first, _, rest = message.partition("\n")
    lines = [f"error: {first}"]
    if rest:
        lines.append(rest)
    if isinstance(exc, CliError) and exc.detail:
        lines.append(exc.detail)
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
    return code


class QuantrackGroup(TyperGroup):
    """The root command group: runs a command and reports its failure as one line."""

    def invoke(self, ctx: Any) -> Any:
        """Run the command; turn any error other than click's own into an exit code."""
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            ctx.exit(130)
        except BrokenPipeError:
            # The reader went away (`quantrack runs list | head`): stop quietly, and point
            # stdout at /dev/null so the interpreter's final flush does not complain.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(141)
        except Exception as exc:
            ctx.exit(report_error(exc, debug=_debug_requested(ctx)))

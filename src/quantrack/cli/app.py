"""The ``quantrack`` command: the root group, its global options and its subcommands."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from quantrack.cli import artifacts, batches, demo, ops, report, runs, sql
from quantrack.cli._errors import QuantrackGroup
from quantrack.cli._options import JsonOption, WorkspaceOption
from quantrack.cli._state import CliState, state_of

__all__ = ["app", "configure_logging", "main"]

app = typer.Typer(
    name="quantrack",
    cls=QuantrackGroup,
    help="Record every backtest; find, compare and trust any result later.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(runs.app, name="runs")
app.add_typer(batches.app, name="batches")
app.add_typer(artifacts.app, name="artifacts")
app.command("report")(report.report_command)
app.command("sql")(sql.sql_command)
app.command("ops")(ops.ops_command)
app.command("demo")(demo.demo_command)


def configure_logging(verbose: int) -> None:
    """Send quantrack's structlog events to stderr: warnings and above, ``-v`` for info,
    ``-vv`` for debug.

    Only the command line configures logging; the library never does.
    """
    import structlog

    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=False,
    )


class _StderrLogger:
    """Writes each event to whatever ``sys.stderr`` is at that moment (never a stream
    that was replaced and closed since logging was configured).
    """

    def __init__(self, *args: object) -> None:
        del args

    def msg(self, message: str) -> None:
        """Write one rendered event line."""
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _version(value: bool) -> None:
    if value:
        from quantrack import __version__

        typer.echo(f"quantrack {__version__}")
        raise typer.Exit


@app.callback()
def root(
    ctx: typer.Context,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the full traceback when a command fails."),
    ] = False,
    verbose: Annotated[
        int,
        typer.Option("--verbose", "-v", count=True, help="Log more: -v info, -vv debug."),
    ] = 0,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.0,
            envvar="QUANTRACK_TIMEOUT",
            help="Seconds to wait for a workspace another process holds.",
        ),
    ] = 10.0,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Record every backtest; find, compare and trust any result later."""
    state = state_of(ctx)
    state.workspace = workspace if workspace is not None else state.workspace
    state.json = as_json or state.json
    state.debug = debug or state.debug
    state.verbose = max(verbose, state.verbose)
    state.timeout = timeout
    if state.configure_logging:
        configure_logging(state.verbose)


def main() -> None:
    """Run the command line (the ``quantrack`` console script).

    Only here, in a process of its own, does quantrack configure logging; commands
    invoked in-process (typer's test runner) leave the caller's logging alone.
    """
    app(prog_name="quantrack", obj=CliState(configure_logging=True))

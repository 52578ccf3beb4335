"""Console output for the CLI: Rich consoles, the live report of migrations, confirmations.

Migration commands report typed events (``flowdb.database.events``) through Python
logging; this module turns them into lines on the terminal, so the library stays free
of any presentation.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status

_LOGGERS = ("flowdb.migrations", "flowdb.migrations.lock")
MIGRATION_INTERRUPTED = (
    "the database stays at the last migration that completed (see 'flowdb database current')"
)


def interrupted_leaves(outcome: str) -> None:
    """Say what an interrupt from now on leaves behind (for the CLI's last line)."""
    from flowdb.interrupts import leaves

    leaves(outcome)


def escape(text: str) -> str:
    """``text`` made safe to embed in Rich markup (``[bold]`` in a title stays literal)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def stderr_console() -> Console:
    """The console for progress and messages (stdout is kept for data and SQL).

    With ``FLOWDB_LOG_FORMAT=json`` each line it prints is a JSON log line instead.
    """
    from rich.console import Console

    from flowdb import logs

    if logs.json_enabled():
        return Console(file=logs.JsonLines(sys.stderr), highlight=False, soft_wrap=True)  # type: ignore[arg-type]
    return Console(stderr=True, highlight=False, soft_wrap=True)


def quiet_console() -> Console:
    """A console that prints nothing (for the spinner and step lines of JSON logs)."""
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    """The console for a command's data output (stderr with ``--json``: stdout has the JSON)."""
    from rich.console import Console

    from flowdb.cli import json_output

    if json_output.enabled():
        return stderr_console()
    return Console(highlight=False, soft_wrap=True)


def result(text: str) -> None:
    """Print a command's result line (Rich markup) on stdout; with ``--json``, on stderr."""
    stdout_console().print(text)


class MigrationReport(logging.Handler):
    """Prints each applied migration and lock wait as it happens, under a spinner."""

    def __init__(
        self, console: Console, status: Status, activity: str, show_steps: bool = True
    ) -> None:
        super().__init__(level=logging.INFO)
        self.console = console
        self.status = status
        self.activity = activity
        self.show_steps = show_steps
        #: What ran, for the command's result: each step as ``json_output.step`` gives it.
        self.steps: list[dict[str, Any]] = []
        #: The fresh install's event, when the schema came from a snapshot.
        self.fresh: Any = None
        #: Where the backup taken before the change was written, if one was.
        self.backup: str | None = None
        from flowdb import logs

        #: With ``FLOWDB_LOG_FORMAT=json``: records are written as JSON lines, not shown.
        self.structured = logs.json_enabled()
        self.formatter_json = logs.JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        """Show one record: a step line, the spinner's progress, a warning or a message."""
        from flowdb.cli.json_output import step
        from flowdb.database.events import (
            BackupWritten,
            FreshInstalled,
            LockWait,
            Outcome,
            PhaseStarted,
            Progress,
            StepDone,
        )

        event: Any = getattr(record, "event", None)
        if isinstance(event, Outcome):
            return  # the command's result line says it
        if self.structured:  # one JSON line with the event's fields; the console is quiet
            sys.stderr.write(self.formatter_json.format(record) + "\n")
        if isinstance(event, BackupWritten):
            # On stdout with the plan: stderr keeps progress and at most one error line.
            self.backup = event.path
            stdout_console().print(escape(record.getMessage()))
        elif isinstance(event, StepDone):
            self.steps.append(step(event.revision, event.direction, event.elapsed, event.title))
            if not self.show_steps:
                return
            mark = "[green]↑[/]" if event.direction == "upgrade" else "[yellow]↓[/]"
            # A fresh install's revisions landed together: no time of their own.
            took = "" if event.elapsed is None else f"  [dim]{event.elapsed:.2f} s[/]"
            self.console.print(f"  {mark} {event.revision}  {escape(event.title)}{took}")
        elif isinstance(event, FreshInstalled):
            self.fresh = event
            self.console.print(
                f"Installed the head schema {event.head} from the snapshot {event.how} "
                f"({event.revisions} revisions)"
            )
        elif isinstance(event, Progress | PhaseStarted):
            # Inside a long data migration: the spinner says how far it got; without a
            # terminal (CI logs) there is no spinner, so the line is printed instead.
            text = escape(record.getMessage())
            if self.console.is_terminal:
                self.status.update(f"{self.activity}: {text}…")
            else:
                self.console.print(f"    [dim]{text}[/]")
        elif isinstance(event, LockWait) or record.levelno >= logging.WARNING:
            self.console.print(f"[yellow]{escape(record.getMessage())}[/]")
            self.status.update(f"{escape(record.getMessage())}…")
        else:
            self.console.print(escape(record.getMessage()))

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the spinner for the block (while a question is asked)."""
        self.status.stop()
        try:
            yield
        finally:
            self.status.start()


@contextmanager
def migration_report(activity: str, show_steps: bool = True) -> Iterator[MigrationReport]:
    """Show a spinner for ``activity`` and print each migration step while the block runs.

    ``show_steps=False`` hides the per-revision lines, for commands such as ``stamp``
    that move the recorded revision without running any migration.
    """
    interrupted_leaves(MIGRATION_INTERRUPTED)
    from flowdb import logs

    # With JSON lines the handler writes each record itself; its console prints nothing.
    console = quiet_console() if logs.json_enabled() else stderr_console()
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    with console.status(f"{activity}…") as status:
        handler = MigrationReport(console, status, activity, show_steps)
        previous_levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.addHandler(handler)
            lg.setLevel(logging.INFO)
            lg.propagate = False
        try:
            yield handler
        finally:
            for lg, level in zip(loggers, previous_levels, strict=True):
                lg.removeHandler(handler)
                lg.setLevel(level)
                lg.propagate = True


def confirm_or_refuse(question: str, yes: bool, flag: str = "--yes") -> bool:
    """Ask ``question`` on a terminal; without one, refuse unless ``yes`` was given.

    Returns whether to go on. Raises ``ConfirmationRequiredError`` when there is no
    terminal to ask and ``yes`` was not given.
    """
    if yes:
        return True
    from flowdb.errors import ConfirmationRequiredError

    if not sys.stdin.isatty():
        raise ConfirmationRequiredError(
            f"Refusing to continue without confirmation: stdin is not a terminal; "
            f"pass {flag} (-y) to confirm."
        )
    import typer

    return bool(typer.confirm(question, default=False, err=True))

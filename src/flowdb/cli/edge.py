"""The CLI's edge: every failure a user can fix ends in one line and its exit code.

Shared by the Typer app (``flowdb.cli.root``) and the fast path (``flowdb.cli.fast``),
so both end a command the same way (the table in README.md):

* a ``FlowdbError``, or an OS, driver or Alembic error that ``failures.translate``
  knows, prints ``Error: <one line>`` and exits with its kind's code;
* a usage error (unknown option, missing argument) prints one line naming the help;
* Ctrl-C and SIGTERM, at any moment, print one line and exit 130 / 143, saying what
  they leave;
* anything else is a bug and keeps its traceback.

No Typer or Click import: their exceptions are recognised by name.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from flowdb import interrupts, logs
from flowdb.cli import json_output
from flowdb.errors import ExitCode, FlowdbError, Interrupted, one_line_message


class _NoInterruptTracebacks(logging.Filter):
    """Drop a library's log record of a signal's exception (it is reported at the edge).

    A signal can arrive while SQLAlchemy's pool closes a driver connection; the pool
    logs "Exception closing connection" with the traceback, then lets the exception go
    on to ``main``, which says it in one line. Without this filter the user would see
    both, through logging's last-resort handler (the CLI sets no other for libraries).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # The logged exception may be one raised while handling the signal's (a
        # rollback on a connection the signal left busy): look along its chain.
        error = record.exc_info[1] if record.exc_info else None
        return error is None or _interrupt_in(error) is None


def quiet_interrupts_in_library_logs() -> None:
    """Install ``_NoInterruptTracebacks`` on logging's last-resort handler, once."""
    handler = logging.lastResort
    if handler is not None and not any(
        isinstance(f, _NoInterruptTracebacks) for f in handler.filters
    ):
        handler.addFilter(_NoInterruptTracebacks())


def run(command: Callable[[], object]) -> NoReturn:
    """Run ``command``, turning every failure into one line and its exit code; exit.

    The signal handlers are normally installed already (``flowdb.cli.entry``); a signal
    whose exception something swallowed is still reported when the command returns.
    An ``int`` returned is the exit code.
    """
    interrupts.install()
    quiet_interrupts_in_library_logs()
    logs.configure_cli()
    json_output.reset()
    try:
        code = command()
        interrupts.check()
        interrupts.close()
    except BaseException as error:
        sys.exit(report(error))
    sys.exit(code if isinstance(code, int) else 0)


def report(error: BaseException) -> int:
    """Print ``error`` as one line on stderr and return the exit code; re-raise bugs.

    A signal received on the way wins over whatever error it caused (a broken
    connection, a failed cleanup): the user stopped the command, and that is said.
    """
    interrupts.close()  # from here on a signal cannot change what is printed
    interrupt = _interrupt_in(error)
    if interrupt is not None or interrupts.pending() is not None:
        if isinstance(interrupt, Interrupted):
            signum = int(interrupt.args[0])
        else:
            signum = interrupts.pending() or signal.SIGINT
        line, code = interrupts.settle(signum)
        return _fail(line, code)
    if isinstance(error, SystemExit):
        raise error
    if isinstance(error, FlowdbError):
        return _fail(f"Error: {one_line_message(error)}", int(error.exit_code))
    # Click's exceptions, matched by name: Typer may use click or a copy of it.
    kinds = {cls.__name__ for cls in type(error).__mro__}
    context: Any = getattr(error, "ctx", None)
    if "NoArgsIsHelpError" in kinds:
        print(context.get_help() if context else "", file=sys.stderr)
        return int(ExitCode.USAGE)
    if "UsageError" in kinds:
        command = context.command_path if context else "flowdb"
        message = " ".join(getattr(error, "format_message")().split()).rstrip(".")  # noqa: B009
        return _fail(f"Error: {message}; see '{command} --help'.", int(ExitCode.USAGE))
    if "ClickException" in kinds:
        code = int(getattr(error, "exit_code", ExitCode.USAGE))
        return _fail(f"Error: {one_line_message(error)}", code)
    if "Abort" in kinds:
        return int(ExitCode.NO)
    if "Exit" in kinds:  # typer.Exit / click.exceptions.Exit raised outside Click's main
        return int(getattr(error, "exit_code", 0))
    translated = _translate(error)
    if translated is None:
        raise error
    return _fail(f"Error: {one_line_message(translated)}", int(translated.exit_code))


def _fail(line: str, code: int) -> int:
    """Print ``line`` on stderr (``--json``: also a JSON error on stdout); return ``code``."""
    if logs.json_enabled():
        print(logs.line("error", "flowdb.cli", line), file=sys.stderr)
    else:
        print(line, file=sys.stderr)
    json_output.emit_error(line.removeprefix("Error: "), code)
    return code


def _translate(error: BaseException) -> FlowdbError | None:
    if isinstance(error, FlowdbError):
        return error
    if not isinstance(error, Exception):
        return None
    from flowdb.database.failures import translate

    return translate(error)


def _interrupt_in(error: BaseException) -> BaseException | None:
    """The Ctrl-C or SIGTERM behind ``error``, if any (cleanup may raise on top of it)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if interrupts.is_interrupt(current):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None

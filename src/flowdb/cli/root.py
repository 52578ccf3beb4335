"""The ``flowdb`` entry point.

Only Typer is imported at start-up; each command imports what it needs when it runs,
so ``flowdb --help`` stays fast. Every ``FlowdbError`` ends as one line on stderr
and a non-zero exit code; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from flowdb import __version__
from flowdb.cli.database import database_app
from flowdb.cli.server import server_app
from flowdb.errors import FlowdbError, one_line_message

app = typer.Typer(
    name="flowdb",
    help="The database of a workflow-orchestration API: create it, migrate it, serve it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(database_app, name="database")
app.add_typer(server_app, name="server")


def _version_callback(value: bool) -> None:
    if value:
        print(f"flowdb {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
) -> None:
    """The database of a workflow-orchestration API: create it, migrate it, serve it."""


def main() -> None:
    """Run the CLI, turning flowdb's errors into one-line messages and exit codes."""
    try:
        app()
    except FlowdbError as error:
        print(f"Error: {one_line_message(error)}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)

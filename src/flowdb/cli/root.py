"""The ``flowdb`` entry point and its edge: every failure a user can fix ends in one line.

Only Typer is imported at start-up; each command imports what it needs when it runs,
so ``flowdb --help`` stays fast. ``main()`` runs the app through ``flowdb.cli.edge``,
where failures become output and exit codes (the table in README.md):

* a ``FlowdbError``, or an OS, driver or Alembic error that ``failures.translate``
  knows, prints ``Error: <one line>`` and exits with its kind's code;
* a usage error (unknown option, missing argument) prints one line naming the help;
* Ctrl-C and SIGTERM, at any moment, print one line and exit 130 / 143, saying what
  they leave: nothing changed, the database at the last migration that completed (each
  runs in its own transaction), or a stopped server;
* anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import typer

from flowdb import __version__
from flowdb.cli import edge
from flowdb.cli.database import database_app
from flowdb.cli.server import server_app

#: Kept under its old name for callers (and tests) that install it themselves.
_quiet_interrupts_in_library_logs = edge.quiet_interrupts_in_library_logs

app = typer.Typer(
    name="flowdb",
    help="The database of a workflow-orchestration API: create it, migrate it, serve it.",
    no_args_is_help=True,
    rich_markup_mode=None,
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
    """Run the CLI, turning every failure into one line and its exit code (``cli.edge``)."""
    edge.run(lambda: app(standalone_mode=False))

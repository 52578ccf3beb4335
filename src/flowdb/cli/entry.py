"""The ``flowdb`` console script: signals handled first, then the CLI imported and run.

``database upgrade`` and ``database current`` with the options scripts pass run on
the fast path (``flowdb.cli.fast``) without building the Typer app.

Importing Typer, Rich and the commands takes a noticeable part of a second; a Ctrl-C
or SIGTERM in that time must end in the same one line and exit code as later ones, so
this module imports nothing but the signal handling (``flowdb.interrupts``) before it
installs it.
"""

from __future__ import annotations

import sys

from flowdb import interrupts


def main() -> None:
    """Install the signal handlers, then run the CLI (``flowdb.cli.root.main``)."""
    try:
        interrupts.install()  # a signal from here on ends in the except below, or later
        if sys.argv[1:2] == ["database"]:
            # Typer coerces option values through pydantic, whose first model scans every installed
            # package's entry points for pydantic plugins: none of it serves a migration.
            import os

            os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
        from flowdb.cli import fast

        command = fast.command_for(sys.argv[1:])
        if command is not None:  # upgrade or current: no Typer app to build
            from flowdb.cli import edge

            edge.run(command)  # exits, as the Typer app's edge does
        from flowdb.cli.root import main as run

        run()  # exits; its edge reports any interrupt once it is running
    except BaseException as error:  # while the CLI was still being imported
        signum = interrupts.pending()
        # Whatever the signal's exception became (an import wraps some in RuntimeError),
        # a signal received is what ended the command; SystemExit is the CLI's own end.
        if isinstance(error, SystemExit) or signum is None:
            raise
        line, code = interrupts.settle(signum)
        print(line, file=sys.stderr)
        sys.exit(code)

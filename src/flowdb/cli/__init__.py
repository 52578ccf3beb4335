"""The ``flowdb`` command line: Typer commands, Rich output, one-line errors."""

"""``python -m flowdb``: the same as the ``flowdb`` command."""

from flowdb.cli.entry import main

main()

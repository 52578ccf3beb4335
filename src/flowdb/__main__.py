"""``python -m flowdb``: the same as the ``flowdb`` command."""

from flowdb.cli.root import main

main()

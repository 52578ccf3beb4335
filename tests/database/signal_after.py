"""Run the ``flowdb`` console script and send this process SIGTERM right after its N-th statement.

``python -m tests.database.signal_after N database upgrade -y``: the real entry point
(``flowdb.cli.entry.main``, so the handlers of ``flowdb.interrupts`` are in place), and
a real SIGTERM, sent by the process to itself from SQLAlchemy's ``after_cursor_execute``
of its N-th statement on any connection (reads, writes, DDL, the lock's checks). The
handler then raises ``Interrupted`` at the next bytecode, as a SIGTERM from outside
arriving just after that statement would. N = 0 counts only: the run completes and
prints ``statements=K`` as stderr's last line. ``SIGNAL_AFTER_NOTE`` naming a file: the
statement the signal followed is written there (for a failing test's message);
``SIGNAL_AFTER_LIST`` naming a file: every statement is listed there, one a line.

Where SIGKILL (``kill_after``) shows what a sudden death leaves, this shows what the
cleanup of an interrupt leaves: the rollback of the transaction in flight, after
statements that committed by themselves.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    """Count statements on every engine; SIGTERM this process after the N-th."""
    limit = int(sys.argv[1])
    note = os.environ.get("SIGNAL_AFTER_NOTE")
    listing = os.environ.get("SIGNAL_AFTER_LIST")
    seen = 0

    import sqlalchemy as sa

    def after(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        nonlocal seen
        seen += 1
        text = " ".join(statement.split())[:200]
        if listing:
            with open(listing, "a", encoding="utf-8") as handle:
                handle.write(text + "\n")
        if seen == limit:
            if note:
                with open(note, "w", encoding="utf-8") as handle:
                    handle.write(text)
            os.kill(os.getpid(), signal.SIGTERM)

    sa.event.listen(sa.engine.Engine, "after_cursor_execute", after)
    from flowdb.cli.entry import main as flowdb

    sys.argv = ["flowdb", *sys.argv[2:]]
    try:
        flowdb()
    finally:
        if limit == 0:
            print(f"statements={seen}", file=sys.stderr)


if __name__ == "__main__":
    main()

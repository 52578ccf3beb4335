"""Run ``flowdb ARGS`` and SIGKILL this process right after its N-th writing statement.

``python -m tests.database.kill_after N database upgrade -y``; N = 0 counts only: the
run completes and prints the number of writing statements on stderr's last line.
Writing statements: everything a migration sends that is not a read (SELECT, SHOW);
with ``KILL_AFTER_DDL_ONLY=1`` only DDL statements count.
"""

from __future__ import annotations

import os
import signal
import sys

import sqlalchemy as sa

#: Statements that commit by themselves on MySQL: where a kill hurts most.
DDL = ("CREATE", "ALTER", "DROP", "RENAME")


def main() -> None:
    """Count writing statements on every engine; die by SIGKILL after the N-th."""
    limit = int(sys.argv[1])
    only_ddl = os.environ.get("KILL_AFTER_DDL_ONLY") == "1"
    seen = 0

    def after(conn: object, cursor: object, statement: str, *args: object) -> None:
        nonlocal seen
        word = statement.lstrip().split(None, 1)[0].upper()
        if word in ("SELECT", "SHOW") or (only_ddl and word not in DDL):
            return
        seen += 1
        if seen == limit:
            os.kill(os.getpid(), signal.SIGKILL)

    sa.event.listen(sa.engine.Engine, "after_cursor_execute", after)
    from flowdb.cli.root import main as flowdb

    sys.argv = ["flowdb", *sys.argv[2:]]
    try:
        flowdb()
    finally:
        print(f"writes={seen}", file=sys.stderr)


if __name__ == "__main__":
    main()

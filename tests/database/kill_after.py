"""Run ``flowdb ARGS`` and SIGKILL this process right after its N-th writing statement.

``python -m tests.database.kill_after N database upgrade -y``; N = 0 counts only: the
run completes and prints the number of writing statements on stderr's last line.
Writing statements: everything a migration sends that is not a read (SELECT, SHOW);
with ``KILL_AFTER_DDL_ONLY=1`` only DDL statements count. With ``KILL_AFTER_NEW_DDL``
naming a file, N is ignored: the process dies after the first DDL statement not listed
in that file, which it adds to the file first (a chain of runs then dies once after
each distinct DDL statement of the history); ``KILL_AFTER_RECORD_ONLY=1`` adds them to
the file without dying (a run that brings a chain to its starting revision). With
``KILL_AFTER_REPLAY=1`` an empty
database gets the history replayed, not the fresh install from the snapshot.
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
    new_ddl_file = os.environ.get("KILL_AFTER_NEW_DDL")
    record_only = os.environ.get("KILL_AFTER_RECORD_ONLY") == "1"
    done: set[str] = set()
    if new_ddl_file and os.path.exists(new_ddl_file):
        with open(new_ddl_file, encoding="utf-8") as handle:
            done = {line.rstrip("\n") for line in handle}
    seen = 0

    def after(conn: object, cursor: object, statement: str, *args: object) -> None:
        nonlocal seen
        word = statement.lstrip().split(None, 1)[0].upper()
        if word in ("SELECT", "SHOW") or (only_ddl and word not in DDL):
            return
        if new_ddl_file:
            text = " ".join(statement.split())
            if word in DDL and text not in done:
                with open(new_ddl_file, "a", encoding="utf-8") as handle:
                    handle.write(text + "\n")
                if record_only:
                    done.add(text)
                    return
                os.kill(os.getpid(), signal.SIGKILL)
            return
        seen += 1
        if seen == limit:
            os.kill(os.getpid(), signal.SIGKILL)

    sa.event.listen(sa.engine.Engine, "after_cursor_execute", after)
    if os.environ.get("KILL_AFTER_REPLAY") == "1":
        from pathlib import Path

        from flowdb.database import fresh

        fresh.SNAPSHOT_FOLDER = Path(os.devnull) / "no-snapshots"
    from flowdb.cli.root import main as flowdb

    sys.argv = ["flowdb", *sys.argv[2:]]
    try:
        flowdb()
    finally:
        print(f"writes={seen}", file=sys.stderr)


if __name__ == "__main__":
    main()

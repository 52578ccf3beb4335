"""Subprocess helper: a migration job that holds the lock and moves slowly.

``python -m tests.server.slow_migration SECONDS TOTAL``: takes the migration lock of
FLOWDB_DATABASE_URL (a database whose schema is head's but whose version row says the
revision before), prints ``locked``, then records the head migration's backfill in the
progress table, TOTAL rows in all, a share more every 0.2 s, for SECONDS (or until a
line ``finish`` on its stdin: a test that has seen what it needed ends the job then
instead of waiting out SECONDS); then it records head, forgets its progress (as an
online migration's last phase does) and releases the lock.
"""

from __future__ import annotations

import datetime as dt
import select
import sys
import time

import sqlalchemy as sa

from flowdb.database.bookkeeping import CREATE_PROGRESS, PROGRESS_TABLE
from flowdb.database.target import Database


def main(seconds: float, total: int) -> None:
    database = Database.from_settings()
    head = database.history.head
    engine = database.engine("slow-migration")
    started = time.monotonic()
    listening = True  # stdin may say "finish"; at its end (or without one) only time counts
    with database.lock("upgrade"):
        with engine.begin() as connection:
            connection.execute(sa.text(CREATE_PROGRESS))
        print("locked", flush=True)
        while (elapsed := time.monotonic() - started) < seconds:
            done = int(total * elapsed / seconds)
            with engine.begin() as connection:
                connection.execute(sa.text(f"DELETE FROM {PROGRESS_TABLE}"))
                connection.execute(
                    sa.text(
                        f"INSERT INTO {PROGRESS_TABLE} "
                        "(revision, phase, rows_done, updated, rows_total) "
                        "VALUES (:r, 'backfill', :done, :now, :total)"
                    ),
                    {
                        "r": head,
                        "done": done,
                        "now": dt.datetime.now(dt.UTC).isoformat(),
                        "total": total,
                    },
                )
            if not listening:
                time.sleep(0.2)
                continue
            if select.select([sys.stdin], [], [], 0.2)[0]:
                line = sys.stdin.readline()
                if line.strip() == "finish":
                    break
                listening = bool(line)
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": head})
            connection.execute(sa.text(f"DROP TABLE {PROGRESS_TABLE}"))
    engine.dispose()
    print("done", flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]))

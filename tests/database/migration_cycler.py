"""Subprocess helper: migrate FLOWDB_DATABASE_URL to head, then go down one and up again.

Prints ``at head`` once the database is at head, waits for a line on stdin (the
readers have started), then downgrades one revision and upgrades to head again, over
and over (the last revision is an online data migration: it creates and drops flowdb's
progress table), each cycle under one hold of the migration lock, until a second line
arrives on stdin and at least ``argv[1]`` cycles are done. Prints ``cycles N`` at the
end. Gives up after ``argv[2]`` seconds in any case (a test that forgot to stop it).
"""

from __future__ import annotations

import sys
import threading
import time

from flowdb.database import commands
from flowdb.database.target import Database

if __name__ == "__main__":
    least, most_seconds = int(sys.argv[1]), float(sys.argv[2])
    database = Database.from_settings()
    commands.migrate(database, "upgrade", "head")
    print("at head", flush=True)
    sys.stdin.readline()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    deadline = time.monotonic() + most_seconds
    cycles = 0
    while cycles < least or not (stop.is_set() or time.monotonic() > deadline):
        # One lock for both ways: while nobody holds it, the database is at head.
        with database.lock("upgrade"):
            commands.migrate(database, "downgrade", "-1")
            commands.migrate(database, "upgrade", "head")
        cycles += 1
    print(f"cycles {cycles}", flush=True)

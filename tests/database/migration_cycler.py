"""Subprocess helper: migrate FLOWDB_DATABASE_URL to head, then go down one and up again.

Prints ``at head`` once the database is at head, waits for a line on stdin (the
readers have started), then downgrades one revision and upgrades to head again, over
and over, for at least ``argv[1]`` seconds and at least ``argv[2]`` cycles (the last
revision is an online data migration: it creates and drops flowdb's progress table).
Prints ``cycles N`` at the end.
"""

from __future__ import annotations

import sys
import time

from flowdb.database import commands
from flowdb.database.target import Database

if __name__ == "__main__":
    seconds, least = float(sys.argv[1]), int(sys.argv[2])
    database = Database.from_settings()
    commands.migrate(database, "upgrade", "head")
    print("at head", flush=True)
    sys.stdin.readline()
    deadline = time.monotonic() + seconds
    cycles = 0
    while cycles < least or time.monotonic() < deadline:
        commands.migrate(database, "downgrade", "-1")
        commands.migrate(database, "upgrade", "head")
        cycles += 1
    print(f"cycles {cycles}", flush=True)

"""Subprocess helper: take the migration lock of FLOWDB_DATABASE_URL, say so, and hold it."""

from __future__ import annotations

import sys
import time

from flowdb.database.target import Database

if __name__ == "__main__":
    with Database.from_settings().lock("upgrade"):
        print("locked", flush=True)
        time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 600)

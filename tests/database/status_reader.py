"""Subprocess helper: read FLOWDB_DATABASE_URL's status in a loop until a line on stdin.

Prints ``ready`` when it starts reading, then, at the end, one line per read as
``ok COUNT OWNER REVISION`` (or ``... REVISION part way``: the revision a migration is
part way through), and one ``failed ...`` line per
failed read.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter

from flowdb.database.target import Database

if __name__ == "__main__":
    database = Database.from_settings()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    seen: Counter[str] = Counter()
    failures: list[str] = []
    print("ready", flush=True)
    while not stop.is_set():
        try:
            status = database.status()
        except Exception as exc:  # every failure is the finding
            failures.append(f"{type(exc).__name__}: {exc}")
            continue
        if status.in_progress:  # the revision a migration is part way through
            seen[f"{status.owner} {status.in_progress[0][0]} part way"] += 1
        else:
            seen[f"{status.owner} {status.current}"] += 1
    for key, count in seen.items():
        print(f"ok {count} {key}")
    for failure in failures:
        print(f"failed {failure}")

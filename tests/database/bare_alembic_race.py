"""Subprocess helper: run bare ``alembic.command.upgrade`` from 8 threads, one database each.

This is the load the reference's ``with_alembic_lock`` exists for. Alembic's
``context`` and ``op`` are module-level proxies, so two threads running commands at
once can swap each other's migration context: a thread then runs its migrations on
another thread's connection, fails, or waits on a write lock it holds itself. A thread
still running at the deadline counts as stuck. Prints one JSON summary line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from pathlib import Path

THREADS = 8
DEADLINE_SECONDS = 30.0


def main() -> None:
    """Race the threads and print how many failed, got stuck or left a database short of head."""
    from alembic import command

    from flowdb.database.alembic_commands import alembic_config
    from flowdb.database.history import load_history
    from tests.dbtools import revision_of

    # A thread waiting on a write lock that a swapped context holds would otherwise
    # wait the full busy timeout (the lock timeout) before failing.
    os.environ["FLOWDB_MIGRATION_LOCK_TIMEOUT"] = "2"
    folder = Path(tempfile.mkdtemp(prefix="flowdb-race-"))
    urls = [f"sqlite:///{folder}/race-{n}.db" for n in range(THREADS)]
    configs = []
    for url in urls:
        os.environ["FLOWDB_DATABASE_URL"] = url
        configs.append(alembic_config())
    errors: list[str] = []
    barrier = threading.Barrier(THREADS)

    def upgrade(config: object) -> None:
        barrier.wait()
        try:
            command.upgrade(config, "head")  # type: ignore[arg-type]
        except BaseException as error:
            errors.append(f"{type(error).__name__}: {error}"[:300])

    threads = [threading.Thread(target=upgrade, args=(c,), daemon=True) for c in configs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE_SECONDS)
    stuck = sum(thread.is_alive() for thread in threads)
    head = load_history().head
    short_of_head = 0
    if not stuck:
        short_of_head = sum(revision_of(u) != head for u in urls)
    summary = {"errors": errors, "stuck": stuck, "short_of_head": short_of_head}
    print(json.dumps(summary), flush=True)
    sys.stdout.flush()
    os._exit(0)  # stuck daemon threads must not keep the process alive


if __name__ == "__main__":
    main()

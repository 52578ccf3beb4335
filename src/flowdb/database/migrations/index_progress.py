"""The progress line of a long index build: its phase, the share done, the time left.

A ``CREATE INDEX CONCURRENTLY`` is one statement that can run for minutes; the
migration's own connection is busy with it. ``reported`` watches it from a second
connection of the same engine, every few seconds, through the dialect's
``read_index_build`` (PostgreSQL: ``pg_stat_progress_create_index``), and logs each
look as a ``Progress`` event on ``flowdb.migrations``, which the CLI shows as it shows
a backfill's. Where the server reports nothing, nothing is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from flowdb.database.events import Progress
from flowdb.database.waiting import format_seconds

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

#: Seconds between two looks at a build (and at most between two progress lines).
INTERVAL = 2.0

progress = logging.getLogger("flowdb.migrations")

#: Reads ``(phase, done, total)`` of the build on a table, or ``None``.
Reader = Callable[["Connection", str], "tuple[str, int, int] | None"]


def describe(name: str, phase: str, done: int, total: int, left: float | None) -> str:
    """``ix: building index: scanning table, 40% (400 of 1,000), about 3 s left``."""
    text = f"{name}: {phase}"
    if total > 0:
        text += f", {min(done / total, 1.0):.0%} ({done:,} of {total:,})"
    if left is not None:
        text += f", about {format_seconds(left)} left"
    return text


@contextmanager
def reported(
    name: str, table: str, engine: Engine, read: Reader, interval: float = INTERVAL
) -> Iterator[None]:
    """Log the progress of the build of index ``name`` on ``table`` while the block runs.

    The watcher ends with the block; a failed look (a lost connection) ends it early
    and silently: the progress line is a detail, the build's own result is what counts.
    """
    stop = threading.Event()
    first: tuple[str, float, int] | None = None  # (phase, when, done) for the rate

    def look(connection: Connection) -> None:
        nonlocal first
        found = read(connection, table)
        connection.rollback()  # each look sees the view anew
        if found is None:
            return
        phase, done, total = found
        now = time.monotonic()
        left = None
        if first is None or first[0] != phase:
            first = (phase, now, done)
        elif done > first[2] and total > 0:
            rate = (done - first[2]) / (now - first[1])
            left = max(total - done, 0) / rate
        message = describe(name, phase, done, total, left)
        progress.info(message, extra={"event": Progress(message, done=done, total=total or None)})

    def watch() -> None:
        # A build done within the first interval is never looked at, so the many small
        # ones open no second connection (on PostgreSQL, a new server process each).
        if stop.wait(interval):
            return
        try:
            with engine.connect() as connection:
                look(connection)
                while not stop.wait(interval):
                    look(connection)
        except Exception:
            return

    watcher = threading.Thread(target=watch, name=f"flowdb-index-{name}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join(timeout=10)

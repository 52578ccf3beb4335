"""The migration lock: one writer of the schema at a time, across threads, processes and hosts.

The lock itself is the dialect's (``Dialect.migration_lock``): a PostgreSQL advisory
lock, a file lock beside a SQLite file. This module adds what every dialect shares:

* re-entrancy within a thread, so a command that calls another (``reset`` calls
  ``upgrade``) takes the lock once;
* a ``Waiter`` that polls with a bounded timeout (``FLOWDB_MIGRATION_LOCK_TIMEOUT``),
  names the holder on the ``flowdb.migrations.lock`` logger (the CLI shows it) and
  fails with one line naming the holder when the time is up.

Reading a database that a migration keeps locked waits through the same ``Waiter``,
so no command ever blocks silently or for longer than the timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from flowdb.database.events import LockWait
from flowdb.database.lockinfo import POLL_SECONDS, LockHolder, me, now_text
from flowdb.errors import DatabaseBusyError, FlowdbError, MigrationLockTimeoutError

if TYPE_CHECKING:
    # What this module needs of a target.Database, without importing it (no cycle).
    from flowdb.database.handle import DatabaseHandle as Database

logger = logging.getLogger("flowdb.migrations.lock")

REPORT_EVERY_SECONDS = 10.0

_held: dict[str, tuple[int, int]] = {}  # lock identity -> (owning thread id, depth)
_held_guard = threading.Lock()

__all__ = ["POLL_SECONDS", "LockHolder", "Waiter", "me", "migration_lock", "now_text"]


class Waiter:
    """Polls for something another process holds until a deadline, naming the holder.

    ``what`` says what is waited for ("the migration lock", "the database"), for the
    report and the timeout message.
    """

    def __init__(self, database: Database, what: str = "the migration lock") -> None:
        self.database = database
        self.what = what
        self.timeout = database.settings.migration_lock_timeout
        self.started = time.monotonic()
        self.last_report: float | None = None

    def waited(self) -> float:
        """Seconds since the wait began."""
        return time.monotonic() - self.started

    def remaining(self) -> float:
        """Seconds left before the wait gives up (never negative)."""
        return max(self.timeout - self.waited(), 0.0)

    def still_waiting(
        self, holder: LockHolder | None, other: str = "another flowdb command"
    ) -> None:
        """Report the holder (at once and every few seconds), or raise when time is up.

        ``other`` names the holder when it cannot be identified.
        """
        described = holder.describe() if holder else other
        if self.waited() >= self.timeout:
            error: type[FlowdbError] = (
                MigrationLockTimeoutError
                if self.what == "the migration lock"
                else DatabaseBusyError
            )
            where = self.database.describe()
            # "the database" is the database itself: no "the database of the database at X".
            waited_for = (
                f"{where}, locked by"
                if self.what == "the database"
                else f"{self.what} of {where}, held by"
            )
            raise error(
                f"Timed out after {self.timeout:g} s waiting for {waited_for} {described}; "
                "wait for it to finish or raise FLOWDB_MIGRATION_LOCK_TIMEOUT."
            )
        now = time.monotonic()
        if self.last_report is None or now - self.last_report >= REPORT_EVERY_SECONDS:
            self.last_report = now
            logger.warning(
                "Waiting for %s held by %s",
                self.what,
                described,
                extra={"event": LockWait(holder=described, waited=self.waited())},
            )


@contextmanager
def migration_lock(database: Database, command: str) -> Iterator[None]:
    """Hold the migration lock of ``database`` for the duration of the block.

    Re-entrant within a thread: a command that calls another (``reset`` calls
    ``upgrade``) takes the lock once.
    """
    identity = database.dialect.lock_identity
    thread = threading.get_ident()
    with _held_guard:
        owner, depth = _held.get(identity, (thread, 0))
        reentrant = depth > 0 and owner == thread
        if reentrant:
            _held[identity] = (thread, depth + 1)
    if reentrant:
        try:
            yield
        finally:
            _release_depth(identity)
        return

    with database.dialect.migration_lock(command, Waiter(database)):
        with _held_guard:
            _held[identity] = (thread, 1)
        try:
            yield
        finally:
            _release_depth(identity)


def _release_depth(identity: str) -> None:
    with _held_guard:
        owner, depth = _held[identity]
        if depth <= 1:
            del _held[identity]
        else:
            _held[identity] = (owner, depth - 1)

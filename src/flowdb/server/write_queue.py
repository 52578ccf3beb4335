"""One writer at a time, in arrival order: the SQLite server's write queue.

Why: SQLite lets one connection write at a time. Without a queue, every API write
transaction of a worker takes its own pooled connection and runs ``BEGIN IMMEDIATE``;
all but one then sleep in SQLite's busy handler, which retries with growing sleeps
(up to 100 ms each) and in no order. A writer that just arrived can win over one that
has waited a second, so with 8 clients the median write took tens of milliseconds
but the slowest took seconds.

Design: an ``asyncio.Lock`` per server process (per event loop), taken before the
write session opens and released after it commits or rolls back. The lock is fair:
it wakes its waiters first come, first served, and a newcomer queues behind them
instead of grabbing it as it is released. So inside one worker the transactions
run one by one in arrival order, ``BEGIN IMMEDIATE`` never meets another writer of
the same worker, and a wait is the sum of the transactions ahead, not luck. Reads
do not queue: they use the separate read engine (plain ``BEGIN`` on a WAL
database), and WAL readers see the last commit while a writer writes.

A dedicated writer thread would serialise as well, but the async driver already runs
each connection in a thread of its own; a lock in the event loop costs nothing
more, and cancelling a request (client gone) leaves the queue at once.

Bound: the wait for a turn is limited by the same 30 s as SQLite's busy timeout
(``SERVER_BUSY_TIMEOUT_MS``); past it the request fails with ``DatabaseBusyError``
(a 503 saying the database stayed locked), as a writer that waited out the busy
timeout does.

Between processes the queue does not reach: several workers (``--workers N``), a
second replica, the CLI (``flowdb database clean``, a migration) and the server's own
heartbeat and retention threads (sync connections) still meet SQLite's file lock,
and wait for it in the busy handler up to the busy timeout, with its unfair sleeps.
That is why one worker per SQLite file is the recommended setting (README, "The
REST API server").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from flowdb.errors import DatabaseBusyError


class WriteQueue:
    """A fair (FIFO) turn for write transactions within one process, bounded in time."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Requests waiting for or holding the turn now (for tests and diagnostics).
        self.queued = 0

    def _current_lock(self) -> asyncio.Lock:
        # A lock belongs to the event loop it first waited in; a server has one loop per
        # worker, but an app object may be served again on a new loop (tests do so).
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for this caller's turn (after everyone who came before), hold it for the block.

        Raises ``DatabaseBusyError`` when the turn did not come within ``timeout`` seconds.
        """
        lock = self._current_lock()
        self.queued += 1
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    await lock.acquire()
            except TimeoutError:
                raise DatabaseBusyError(
                    f"No turn to write came within {self.timeout:g} s: the writes queued "
                    "ahead of this one took longer than the busy timeout."
                ) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            self.queued -= 1

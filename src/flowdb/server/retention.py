"""The retention service: the API server deletes old finished flow runs by itself.

Off unless ``FLOWDB_RETENTION_DAYS`` is above 0. Then each server process runs a round
at start and every ``FLOWDB_RETENTION_INTERVAL`` seconds: ``retention.clean`` with the
cut-off ``now - FLOWDB_RETENTION_DAYS``, in a worker thread, in the same short,
locked batches as ``flowdb database clean``. Replicas and workers share one cleaner
lock (``Dialect.cleaner_lock``): a round that finds it taken is skipped,
so never two cleaners delete at once. A round that fails (the schema not at head
during a rolling upgrade, the database unreachable) is logged and retried at the next
interval; it never stops the server. On shutdown the round in progress stops after
its current batch, and the shutdown waits for it (the loop is woken, never cancelled:
a cancelled task would leave its worker thread deleting on while the server closes its
engines).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flowdb.errors import DatabaseBusyError, FlowdbError, one_line_message

if TYPE_CHECKING:
    from flowdb.database.retention import CleanProgress
    from flowdb.database.target import Database

logger = logging.getLogger("flowdb.retention")


class _Stopping(Exception):
    """Raised between two batches when the server shuts down."""


@dataclass
class RetentionService:
    """One server process's retention loop: its task, and the flag that stops it."""

    database: Database
    task: asyncio.Task[None] | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    #: Set with ``stopping``: ends the wait between rounds at once.
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    rounds: int = 0
    #: What the last round did, for logs and tests: ``deleted N runs``, ``skipped: ...``.
    last: str = ""

    def run_round(self) -> None:
        """One clean at ``now - FLOWDB_RETENTION_DAYS`` (in a worker thread)."""
        from flowdb.database.column_types import utcnow
        from flowdb.database.retention import clean

        settings = self.database.settings
        cutoff = utcnow() - dt.timedelta(days=settings.retention_days)

        def between_batches(_progress: CleanProgress) -> None:
            if self.stopping.is_set():
                raise _Stopping

        try:
            progress = clean(
                self.database,
                cutoff,
                batch_size=settings.retention_batch_size,
                on_batch=between_batches,
            )
        except DatabaseBusyError:
            self.last = "skipped: another cleaner holds the cleaner lock"
        except _Stopping:
            self.last = "stopped by the shutdown (the committed batches stay deleted)"
        except FlowdbError as error:
            self.last = f"failed: {one_line_message(error)}"
            logger.warning("Retention round failed: %s", one_line_message(error))
        else:
            self.last = (
                f"deleted {progress.runs_done:,} flow runs ({progress.rows_done:,} rows) "
                f"that ended before {cutoff:%Y-%m-%d %H:%M} UTC"
            )
        self.rounds += 1
        logger.info("Retention: %s", self.last)

    async def _loop(self) -> None:
        from anyio import to_thread

        interval = self.database.settings.retention_interval
        while not self.stopping.is_set():
            await to_thread.run_sync(self.run_round)
            with suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), interval)

    async def stop(self) -> None:
        """Stop the loop and wait for it: a round in progress ends after its current batch."""
        self.stopping.set()
        self.woken.set()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


def start(database: Database) -> RetentionService | None:
    """Start the retention loop when ``FLOWDB_RETENTION_DAYS`` is above 0 (else ``None``)."""
    if database.settings.retention_days <= 0:
        return None
    service = RetentionService(database)
    service.task = asyncio.get_running_loop().create_task(service._loop())
    return service

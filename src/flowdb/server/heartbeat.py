"""The replica's heartbeat: tell the fleet this server serves, and run waiting contracts.

Every ``FLOWDB_SERVER_HEARTBEAT_INTERVAL`` seconds the server writes its row of
``flowdb_replica`` (``database.fleet.beat``): release, the head its code serves, since,
last seen, host and pid. A clean shutdown removes the row; a killed server's row goes
stale after ``FLOWDB_SERVER_HEARTBEAT_STALE`` seconds.

With ``FLOWDB_MIGRATE_ON_START`` on, a replica whose database's next revision is a
contract (its start stopped before it while older replicas served) runs it and the rest
after a beat once no replica of an older release is left: under the migration lock,
so exactly one replica applies them and the others find the database at head.

A failed beat (the database briefly unreachable) is logged and retried at the next
interval; it never stops the server. Stopping lets a beat or contract in flight finish
before the row is removed: a cancelled task would leave its worker thread running, and a
beat landing after the removal would write the row back (a stopped replica shown as
serving until it went stale).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import TYPE_CHECKING

from anyio import to_thread

from flowdb.database import fleet

if TYPE_CHECKING:
    from flowdb.database.target import Database

logger = logging.getLogger("flowdb.server")


class Heartbeat:
    """One replica's heartbeat task (one per server process)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.replica = fleet.new_replica(database.history.head)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Write the first beat now, then keep beating in the background."""
        await self._beat_once()
        self._task = asyncio.create_task(self._run(), name="flowdb-heartbeat")

    async def stop(self) -> None:
        """Stop beating and remove this replica's row (it no longer serves).

        Waits for the beat (or contract) in flight, then removes the row: never
        cancelled mid-way, whose thread would go on and could write the row back.
        """
        self._stopping.set()
        if self._task is not None:
            try:
                await self._task
            except Exception as exc:  # shutting down: say it, and still remove the row
                logger.warning("The heartbeat had stopped on an error: %s", exc)
            self._task = None
        try:
            await to_thread.run_sync(fleet.leave, self.database, self.replica)
        except Exception as exc:  # shutting down: say it, never raise
            logger.warning("Could not remove this replica's heartbeat row: %s", exc)

    async def _run(self) -> None:
        interval = self.database.settings.server_heartbeat_interval
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
            if self._stopping.is_set():
                return
            await self._beat_once()
            if self.database.settings.migrate_on_start:
                try:
                    await to_thread.run_sync(run_waiting_contracts, self.database)
                except Exception as exc:  # retried at the next beat
                    logger.warning("Running the waiting contract revisions failed: %s", exc)

    async def _beat_once(self) -> None:
        try:
            self.replica = await to_thread.run_sync(fleet.beat, self.database, self.replica)
        except Exception as exc:  # retried at the next beat
            logger.warning("Could not write this replica's heartbeat: %s", exc)


def run_waiting_contracts(database: Database) -> bool:
    """Apply the pending contract revisions when no older replica serves; whether it ran.

    Cheap when there is nothing to do (one status read). The upgrade itself holds the
    migration lock and checks the fleet again under it (``hold_contracts``), so of many
    replicas trying at once, one applies and the others find nothing left.
    """
    from flowdb.database import commands
    from flowdb.database.alembic_commands import ALEMBIC_LOCK

    status = database.status()
    held = None if status.in_progress else fleet.held_contract(database, status.current)
    if held is None:
        return False
    if fleet.serving(database).older_than(database.history, held):
        return False
    with ALEMBIC_LOCK:
        plan = commands.migrate(database, "upgrade", "head", hold_contracts=True)
    if plan.steps:
        logger.info(
            "No replica of an older release serves any more: applied the contract revision(s) %s",
            ", ".join(step.id for step in plan.steps),
        )
    return bool(plan.steps)

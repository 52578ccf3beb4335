"""What the API server calls on start: make sure the schema is at head, cheaply.

``ensure_schema()`` is idempotent and safe to call from every replica at once. When
the database is already at head it costs one small query and does not import Alembic;
otherwise it upgrades under the migration lock, where exactly one caller does the work
and the others wait, then find the database at head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowdb.database import commands
from flowdb.database.alembic_commands import ALEMBIC_LOCK
from flowdb.database.fleet import pending_contracts
from flowdb.database.target import Database

if TYPE_CHECKING:
    from flowdb.database.status import SchemaStatus


def ensure_schema(database: Database | None = None, *, migrate: bool = True) -> SchemaStatus:
    """Bring the database to head (or, with ``migrate=False``, wait until it is there).

    Without ``migrate``, another process (a migration job) is expected to upgrade it;
    the wait ends with ``SchemaNotAtHeadError`` once ``FLOWDB_SCHEMA_WAIT_TIMEOUT``
    seconds pass with nobody holding the migration lock and no progress
    (``waiting.SchemaWaiter``).

    Contract revisions wait while replicas of an older release serve (``fleet``): the
    upgrade stops before them and the server serves the expanded schema; the heartbeat
    (``server.heartbeat``) runs them once those replicas are gone.

    Never downgrades: a database stamped by a newer flowdb (or another application's)
    raises before anything is touched. ``database`` defaults to the configured one.
    """

    database = database or Database.from_settings()
    status = database.status()
    status.require_known(database)
    if status.at_head and not status.in_progress:
        return status
    if not migrate and not status.in_progress and pending_contracts(database, status.current):
        # Only contract revisions are left: they wait for the older replicas to go
        # (``fleet``); this code serves the expanded schema meanwhile.
        return status
    if not migrate:
        from flowdb.database.waiting import SchemaWaiter

        # Replicas may start before the migration job ends: wait for it while it visibly
        # goes on, and give up after FLOWDB_SCHEMA_WAIT_TIMEOUT seconds in which nothing moved.
        SchemaWaiter(database, database.settings.schema_wait_timeout).wait()
        return database.status()

    with ALEMBIC_LOCK:
        commands.migrate(database, "upgrade", "head", hold_contracts=True)
    return database.status()

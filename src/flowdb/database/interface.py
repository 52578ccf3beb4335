"""What the API server calls on start: make sure the schema is at head, cheaply.

``ensure_schema()`` is idempotent and safe to call from every replica at once. When
the database is already at head it costs one small query and does not import Alembic;
otherwise it upgrades under the migration lock, where exactly one caller does the work
and the others wait, then find the database at head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowdb.errors import SchemaNotAtHeadError

if TYPE_CHECKING:
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database


def ensure_schema(database: Database | None = None, *, migrate: bool = True) -> SchemaStatus:
    """Bring the database to head (or, with ``migrate=False``, wait until it is there).

    Without ``migrate``, another process (a migration job) is expected to upgrade it;
    the wait is bounded by ``FLOWDB_SCHEMA_WAIT_TIMEOUT``.

    Contract revisions wait while replicas of an older release serve (``fleet``): the
    upgrade stops before them and the server serves the expanded schema; the heartbeat
    (``server.heartbeat``) runs them once those replicas are gone.

    Never downgrades: a database stamped by a newer flowdb (or another application's)
    raises before anything is touched. ``database`` defaults to the configured one.
    """
    from flowdb.database.fleet import pending_contracts
    from flowdb.database.target import Database

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
        from flowdb.database.waiting import wait_for_head

        # Replicas may start before the migration job ends: wait for it, bounded.
        return wait_for_head(
            database,
            database.settings.schema_wait_timeout,
            failure=SchemaNotAtHeadError,
            hint="run 'flowdb database upgrade -y', set FLOWDB_MIGRATE_ON_START=true, or "
            "raise FLOWDB_SCHEMA_WAIT_TIMEOUT",
        )
    from flowdb.database import commands
    from flowdb.database.alembic_commands import ALEMBIC_LOCK

    with ALEMBIC_LOCK:
        commands.migrate(database, "upgrade", "head", hold_contracts=True)
    return database.status()

"""Waiting for the schema to reach head (Airflow's ``db check-migrations``).

Replicas that do not migrate (``FLOWDB_MIGRATE_ON_START=false``) and deployment
scripts wait here for the migration job: the database is polled, read-only, until it
is at head with no migration part way through. A database that cannot become head by
waiting (a newer flowdb's, another application's, a damaged file) ends the wait at
once; an unreachable or busy one is retried until the time is up, and then its own
error ends the wait.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from flowdb.database.partway import part_way
from flowdb.errors import (
    DatabaseBusyError,
    DatabaseUnreachableError,
    FlowdbError,
    MigrationLockTimeoutError,
    SchemaWaitTimeoutError,
)

if TYPE_CHECKING:
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database

POLL_SECONDS = 0.5
#: Errors that may go away while waiting (the server starts, the migration commits).
_RETRIED = (DatabaseUnreachableError, DatabaseBusyError, MigrationLockTimeoutError)


def wait_for_head(
    database: Database,
    timeout: float,
    *,
    poll: float = POLL_SECONDS,
    failure: type[FlowdbError] = SchemaWaitTimeoutError,
    hint: str = "run 'flowdb database upgrade -y', or wait longer (--timeout)",
) -> SchemaStatus:
    """Return the status once ``database`` is at head; raise ``failure`` after ``timeout`` s.

    Each read waits at most the time left (not ``FLOWDB_MIGRATION_LOCK_TIMEOUT``).
    """
    deadline = time.monotonic() + timeout
    last_error: FlowdbError | None = None
    while True:
        remaining = max(deadline - time.monotonic(), 0.0)
        try:
            status = _bounded(database, remaining).status()
        except _RETRIED as error:
            last_error = error
        else:
            status.require_known(database)
            if status.at_head and not status.in_progress:
                return status
            last_error = None
        if time.monotonic() >= deadline:
            if last_error is not None:
                raise type(last_error)(
                    f"Gave up waiting after {timeout:g} s for the schema of "
                    f"{database.describe()}: {last_error}"
                )
            raise failure(
                f"{database.describe()[:1].upper()}{database.describe()[1:]} is at "
                f"{status.current or 'base'}, {status.pending} migration(s) behind head "
                f"{status.head}, after waiting {timeout:g} s; {_hint(database, status, hint)}."
            )
        time.sleep(min(poll, max(deadline - time.monotonic(), 0.0)))


def _hint(database: Database, status: SchemaStatus, hint: str) -> str:
    """``hint``, or for a migration left part way through, the commands that resolve it."""

    stuck = part_way(status, database.history)
    if stuck is None:
        return hint
    return f"{stuck.describe()}: {stuck.way_out()}"


def _bounded(database: Database, seconds: float) -> Database:
    """``database`` with its read waits bounded by ``seconds``."""
    if seconds >= database.settings.migration_lock_timeout:
        return database
    settings = database.settings.model_copy(update={"migration_lock_timeout": seconds})
    dialect = type(database.dialect)(database.url, settings)
    return replace(database, settings=settings, dialect=dialect)

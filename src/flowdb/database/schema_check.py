"""Comparing the live database schema with the ORM models (``flowdb database check``).

Uses Alembic's autogenerate comparison, the same one ``revision --autogenerate`` uses,
so "no differences" here means a new revision would have nothing to write. Tables of
other applications sharing the database are left out (``include_in_comparison``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowdb.database import journal
from flowdb.database.bookkeeping import TABLES
from flowdb.database.dialects.base import READS_ONLY
from flowdb.database.history import load_history
from flowdb.database.locking import POLL_SECONDS, Waiter
from flowdb.errors import FlowdbError, MigrationLockTimeoutError

if TYPE_CHECKING:
    from flowdb.database.locking import LockHolder
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database


def settled_differences(
    database: Database, compare: Callable[[SchemaStatus], list[str]]
) -> list[str]:
    """``compare(status)`` run while no migration runs, after waiting for one that does.

    Comparing a schema that a migration is changing reports its half-changed tables as
    differences, or fails when a table it reflected is dropped. So, as ``upgrade`` waits
    for the migration lock, ``check`` waits for the running migration to end (naming
    it, for at most ``FLOWDB_MIGRATION_LOCK_TIMEOUT``), then compares; a comparison that
    a migration overtook (one started meanwhile, or the revision moved) is done again.
    It never takes the lock itself: a check writes nothing and holds up no migration.
    """

    waiter = Waiter(database, what="the end of the running migration")
    while True:
        holder = database.migration_running()
        if holder is not None:
            if waiter.waited() >= waiter.timeout:
                raise _still_running(database, holder, waiter.timeout)
            waiter.still_waiting(holder)
            time.sleep(min(POLL_SECONDS, waiter.remaining()))
            continue
        status = database.status()
        before = _state(database, status)
        try:
            differences = compare(status)
        except Exception:
            if not _overtaken(database, before):
                raise  # a failure of its own, not a migration's doing
        else:
            if not _overtaken(database, before):
                return differences
        if waiter.waited() >= waiter.timeout:  # migrated without flowdb's lock, on and on
            raise MigrationLockTimeoutError(
                f"The schema of {database.describe()} kept changing while check compared it, "
                f"for {waiter.timeout:g} s (FLOWDB_MIGRATION_LOCK_TIMEOUT); run check again "
                "once the migrations have ended."
            )


def _state(database: Database, status: SchemaStatus) -> tuple[object, ...]:
    """What changes with every migration step: the revision, progress, the last run row.

    The run row tells a whole migration there and back (down one, up again) that
    happened in between from none.
    """

    runs = journal.read_runs(database, status)
    return (status.current, status.in_progress, runs[-1]["id"] if runs else None)


def _overtaken(database: Database, before: tuple[object, ...]) -> bool:
    """Whether a migration runs now, or ran since the state ``before`` was read."""
    if database.migration_running() is not None:
        return True
    return _state(database, database.status()) != before


def _still_running(database: Database, holder: LockHolder, timeout: float) -> FlowdbError:
    where = database.describe()
    return MigrationLockTimeoutError(
        f"A migration is running on {where}: {holder.describe()}; check compares the schema "
        f"once it ends and waited {timeout:g} s (FLOWDB_MIGRATION_LOCK_TIMEOUT) for it; run "
        "check again when it has ended, or raise the timeout."
    )


def schema_differences(database: Database) -> list[str]:
    """Each difference between the database and the models, as one readable line."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import exc as sa_exc

    from flowdb.database.orm_models import Base

    engine = database.engine("flowdb-check")
    try:
        with database.errors(), engine.connect() as connection:
            connection.execution_options(**{READS_ONLY: True})
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "include_object": include_in_comparison},
            )
            with warnings.catch_warnings():
                # Reflection beside a running migration can meet an index whose column
                # is being dropped (SQLAlchemy warns and skips it); the comparison is run
                # again once the migration ends (``settled_differences``), so the
                # half-way picture is never the verdict and its warning is noise.
                warnings.simplefilter("ignore", sa_exc.SAWarning)
                diffs = compare_metadata(context, Base.metadata)
            differences = [_describe(diff) for diff in diffs]
            connection.rollback()
            return differences
    finally:
        engine.dispose()


def _describe(diff: Any) -> str:
    if isinstance(diff, list):  # column modifications come grouped
        return "; ".join(_describe(item) for item in diff)
    action, *details = diff
    names = []
    for detail in details:
        name = getattr(detail, "name", None)
        if name is not None:
            table = getattr(detail, "table", None)
            names.append(
                f"{table.name}.{name}" if table is not None and table.name != name else name
            )
        elif isinstance(detail, str):
            names.append(detail)
    # Column diffs carry the table name and then "table.column": keep the precise one.
    names = [n for n in names if not any(other.startswith(f"{n}.") for other in names)]
    return f"{action.replace('_', ' ')}: {', '.join(names) or details}"


def include_in_comparison(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Compare flowdb's own tables only.

    Alembic's version table, flowdb's own tables (``bookkeeping``), and
    tables of other applications that share the database (in the database, but neither
    in the models nor ever created by flowdb's history),
    are neither reported by ``check`` nor dropped by ``revision --autogenerate``.
    """
    from flowdb.database.bookkeeping import ALEMBIC_VERSION_TABLE

    if type_ != "table":
        return True
    if name == ALEMBIC_VERSION_TABLE or name in TABLES:
        return False
    foreign = reflected and compare_to is None and name not in load_history().all_tables
    return not foreign

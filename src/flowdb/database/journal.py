"""flowdb's record of every migration run: ``flowdb_migration_run``.

One row per revision and run: which revision, which direction (``upgrade``,
``downgrade``, ``stamp``, ``fresh install``, ``accept`` for a changed file accepted on
purpose), when it started, how long it took, which flowdb, host, process and database
user ran it, and whether it succeeded (else the one-line error). Like Flyway's
``flyway_schema_history``, and for the same uses:

* ``flowdb database history`` says when and by whom each applied revision was applied;
* the SHA-256 of the revision file applied is kept, so a file changed since then is
  caught (``changed_revisions``) before an upgrade builds on it.

The table is flowdb's own bookkeeping, not part of the schema the history builds: it
is defined in ``bookkeeping``, created on first use or brought to its newest shape
(``bookkeeping.upgrade``, inside the step's transaction), read as it is (an older
shape's missing columns as ``None``), survives downgrades, is left out of ``check``'s
comparison with the models, and is never taken for another application's table. A
successful step writes its row in its own transaction, so the row exists exactly when
the step committed; a failed step's row is written afterwards in a transaction of its
own, since the step's was rolled back.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowdb import __version__
from flowdb.database import bookkeeping
from flowdb.database.bookkeeping import RUN_TABLE as RUN_TABLE
from flowdb.database.dialects.base import READS_ONLY
from flowdb.database.fingerprints import declared, file_hash

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from flowdb.database.history import History, Revision
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database

#: The direction of the rows a fresh install writes (one per revision, ``fresh``).
FRESH_INSTALL = "fresh install"
#: Directions whose successful rows say "this file is the one applied".
APPLYING = ("upgrade", "stamp", FRESH_INSTALL, "accept")
#: The columns flowdb writes (``id`` is the table's own), in their newest shape.
COLUMNS = tuple(column for column in bookkeeping.RUN_COLUMNS if column != "id")

logger = logging.getLogger("flowdb.migrations")
_HOST = socket.gethostname()


@dataclass(frozen=True)
class Run:
    """One row of the record: a revision applied, reverted, stamped or installed."""

    revision: str
    direction: str
    started_at: str
    duration_ms: int
    success: bool = True
    error: str | None = None
    file_hash: str | None = None
    down_revision: str | None = None
    serves_previous_code: bool | None = None
    flowdb_version: str = __version__
    host: str = ""
    pid: int = 0
    db_user: str = ""


def now() -> str:
    """The current moment as ISO 8601 UTC text (sorts as it reads)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def started(
    revision: str,
    direction: str,
    at: str,
    duration: float,
    *,
    file_hash: str | None = None,
    error: str | None = None,
    source: Revision | None = None,
) -> Run:
    """A row for this process (host, pid) with ``duration`` in seconds.

    ``source`` is the revision's file, when this flowdb has it: its parent and its
    ``SERVES_PREVIOUS_CODE`` declaration go into the row.
    """
    return Run(
        revision=revision,
        direction=direction,
        started_at=at,
        duration_ms=round(duration * 1000),
        success=error is None,
        error=error,
        file_hash=file_hash,
        down_revision=source.down_revision if source else None,
        serves_previous_code=source.serves_previous if source else None,
        host=_HOST,
        pid=os.getpid(),
    )


def literal(value: object) -> str:
    """``value`` as a SQL literal: NULL, TRUE/FALSE, a number, or a quoted string."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def insert_sql(runs: list[Run], user_sql: str) -> str:
    """One INSERT of ``runs``, with the database user given as SQL (``current_user``, a literal)."""
    rows = [
        "("
        + ", ".join(
            user_sql if name == "db_user" else literal(getattr(run, name)) for name in COLUMNS
        )
        + ")"
        for run in runs
    ]
    return f"INSERT INTO {RUN_TABLE} ({', '.join(COLUMNS)}) VALUES {', '.join(rows)}"


def record(connection: Connection, database: Database, runs: list[Run]) -> None:
    """Write ``runs`` on ``connection``, in its transaction.

    flowdb's tables are created, or brought to their newest shape, first
    (``bookkeeping.upgrade``; the caller holds the migration lock).
    """
    bookkeeping.upgrade(connection)
    if runs:
        connection.exec_driver_sql(insert_sql(runs, database.dialect.current_user_sql()))


def record_apart(database: Database, runs: list[Run]) -> None:
    """Write ``runs`` in a transaction of their own (a failed step's row); never raises."""
    try:
        engine = database.engine("flowdb-journal")
        try:
            with engine.begin() as connection:
                record(connection, database, runs)
        finally:
            engine.dispose()
    except Exception as exc:  # the failure being recorded matters more than its record
        logger.debug("Could not record the failed step: %s", exc)


def read_runs(database: Database, status: SchemaStatus) -> list[dict[str, Any]]:
    """Every row of the record, oldest first (``[]`` when the table does not exist).

    Reads the columns the table has: one made by an earlier flowdb (an older shape,
    ``bookkeeping``) is read as it is, its missing columns as ``None``, without writing.
    """
    if RUN_TABLE not in status.tables:
        return []
    with database.errors():
        plain = database.dialect.read_rows(RUN_TABLE)
    if plain is not None:  # the bare driver (SQLite): the columns it has, booleans as 0/1
        from flowdb.database.bookkeeping import RUN_BOOLEANS, RUN_COLUMNS

        empty = dict.fromkeys(RUN_COLUMNS)
        read = [{**empty, **row} for row in plain]
        for row in read:
            for name in RUN_BOOLEANS:
                if row[name] is not None:
                    row[name] = bool(row[name])
        return read
    import sqlalchemy as sa

    table = bookkeeping.run_table()
    engine = database.engine("flowdb-journal")
    try:
        with database.errors(), engine.connect() as connection:
            connection.execution_options(**{READS_ONLY: True})
            present = {c["name"] for c in sa.inspect(connection).get_columns(RUN_TABLE)}
            columns = [column for column in table.c if column.name in present]
            query = sa.select(*columns).order_by(table.c.id)
            rows = connection.execute(query).mappings().all()
            connection.rollback()
    finally:
        engine.dispose()
    missing = dict.fromkeys(column.name for column in table.c if column.name not in present)
    return [{**missing, **row} for row in rows]


def applied_rows(
    runs: list[dict[str, Any]], history: History, current: str | None
) -> dict[str, Any]:
    """For each revision applied now: its latest successful applying row (when there is one)."""
    applied = {revision.id for revision in history.revisions[: history.position(current)]}
    latest: dict[str, Any] = {}
    for row in runs:
        if row["success"] and row["direction"] in APPLYING and row["revision"] in applied:
            latest[row["revision"]] = row
    return latest


def changed_revisions(
    runs: list[dict[str, Any]], history: History, current: str | None
) -> list[str]:
    """Applied revisions whose file now differs from the one recorded when it was applied.

    A difference the history declares (``fingerprints.declared``: an amendment of a
    released file) is not a change.
    """

    latest = applied_rows(runs, history, current)
    changed = []
    for revision in history.revisions[: history.position(current)]:
        applied = latest[revision.id]["file_hash"] if revision.id in latest else None
        now = file_hash(revision)
        if applied and applied != now and not declared(history, revision.id, applied, now):
            changed.append(revision.id)
    return changed


@dataclass(frozen=True)
class Ahead:
    """How a database stands ahead of this flowdb's history, as its record tells.

    ``revisions`` are the applied revisions this flowdb has no file for, newest first,
    each with what its file declared; ``reaches_head`` says whether following their
    recorded parents leads to this flowdb's head (and not to a fork or a gap).
    """

    revisions: tuple[tuple[str, bool | None], ...]
    reaches_head: bool


def ahead_of(runs: list[dict[str, Any]], current: str, history: History) -> Ahead:
    """Follow ``current``'s recorded parents back to a revision ``history`` knows."""
    latest: dict[str, dict[str, Any]] = {}
    for row in runs:
        if row["success"] and row["direction"] in APPLYING:
            latest[row["revision"]] = row
    chain: list[tuple[str, bool | None]] = []
    revision: str | None = current
    while revision is not None and not history.knows(revision) and len(chain) <= len(latest):
        applied = latest.get(revision)
        if applied is None:
            return Ahead(tuple(chain), reaches_head=False)
        chain.append((revision, applied.get("serves_previous_code")))
        revision = applied.get("down_revision")
    return Ahead(tuple(chain), reaches_head=revision is not None and revision == history.head)

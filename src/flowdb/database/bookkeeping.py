"""flowdb's own tables, defined once, and the steps that bring an older shape up to date.

Every name of a table flowdb keeps beside the schema (Alembic's version table among
them), its SQL and its ``sa.Table`` is defined here and nowhere else (the two names the
dialects read first come from the leaf ``tables``); this module imports nothing else
from flowdb, so every layer (the dialects too) may use it.

flowdb keeps three tables of its own beside the schema the history builds:

* ``flowdb_migration_run``, the run record (``journal``);
* ``flowdb_migration_progress``, migrations part way through (``migrations/online.py``,
  ``migrations/restartable.py``), created when needed and dropped when empty;
* ``flowdb_bookkeeping_version``, one row: which shape the others have;
* ``flowdb_replica``, one row per API server replica that serves the database, its
  heartbeat (``fleet``): which release and head it serves, since when, last seen.

Their shape changes with flowdb, not with the migration history, so it has a version
of its own. Every change is an ordered step (``STEPS``); a write command runs the
steps a database lacks under the migration lock before anything writes the tables
(``upgrade``). A database older than the version table (made by an earlier release)
has its version read from the columns it has (``read_version``). Readers never write:
they read the columns that exist (``journal.read_runs``). A new step only adds what an
older flowdb can ignore (nullable columns, new tables), so a database upgraded by a
newer flowdb stays writable by this one.

Only the table definitions use SQLAlchemy, imported on demand: the fresh install on
SQLite uses the plain SQL here without importing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flowdb.database import tables

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

RUN_TABLE = "flowdb_migration_run"
PROGRESS_TABLE = tables.PROGRESS_TABLE
VERSION_TABLE = tables.BOOKKEEPING_VERSION_TABLE
REPLICA_TABLE = "flowdb_replica"
#: flowdb's own tables (Alembic's version table aside).
TABLES = frozenset({RUN_TABLE, PROGRESS_TABLE, VERSION_TABLE, REPLICA_TABLE})
#: Alembic's version table (its default name; ``migrations/env.py`` passes it to Alembic)
#: and its one column: the revision the database is at.
ALEMBIC_VERSION_TABLE = tables.VERSION_TABLE
ALEMBIC_VERSION_COLUMN = "version_num"
#: The revisions recorded in Alembic's version table (plain SQL, every dialect).
SELECT_REVISIONS = f"SELECT {ALEMBIC_VERSION_COLUMN} FROM {ALEMBIC_VERSION_TABLE}"

#: The progress table, as plain SQL: the same text on every dialect, run by migrations
#: (through SQLAlchemy) and by the fresh install (through ``sqlite3`` too). It lives only
#: while a migration is part way through, so it has no version step: ``rows_total`` (the
#: rows a backfill has in all) is absent from a table an older flowdb created, and its
#: writers (``online.py``) and readers (``Catalog.read_rows``) check for it.
CREATE_PROGRESS = (
    f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} ("
    "revision VARCHAR(32) NOT NULL PRIMARY KEY, "
    "phase VARCHAR(64) NOT NULL, "
    "rows_done BIGINT NOT NULL DEFAULT 0, "
    "last_key VARCHAR(64), "
    "updated VARCHAR(40) NOT NULL, "
    "rows_total BIGINT)"
)
#: The phases of a progress row besides an online migration's own (``online``): a step's
#: statements where DDL commits by itself, a downgrade under way there, a fresh install.
STATEMENTS_PHASE = "statements"
DOWNGRADE_PHASE = "downgrade"
FRESH_INSTALL_PHASE = "fresh install"
_DELETE_PROGRESS = f"DELETE FROM {PROGRESS_TABLE} WHERE revision = :r"
CREATE_VERSION = f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER NOT NULL)"
#: The replicas' heartbeats (step 3), plain SQL for the same reasons. Times are UTC in
#: ISO 8601 text (as in the run record), written by the replica's clock.
CREATE_REPLICAS = (
    f"CREATE TABLE IF NOT EXISTS {REPLICA_TABLE} ("
    "id VARCHAR(64) NOT NULL PRIMARY KEY, "
    "flowdb_version VARCHAR(32) NOT NULL, "
    "head_revision VARCHAR(32), "
    "host VARCHAR(255) NOT NULL, "
    "pid INTEGER NOT NULL, "
    "since VARCHAR(40) NOT NULL, "
    "last_seen VARCHAR(40) NOT NULL)"
)


def read_progress(connection: Connection, revision: str) -> tuple[str, int, str | None] | None:
    """``revision``'s progress row (phase, rows done, last key), or ``None`` when it has none.

    The progress table must exist (``CREATE_PROGRESS`` ran in this migration).
    """
    import sqlalchemy as sa

    row = connection.execute(
        sa.text(f"SELECT phase, rows_done, last_key FROM {PROGRESS_TABLE} WHERE revision = :r"),
        {"r": revision},
    ).first()
    return None if row is None else (str(row[0]), int(row[1]), row[2])


def record_progress(
    connection: Connection,
    revision: str,
    phase: str,
    rows_done: int = 0,
    last_key: str | None = None,
    rows_total: int | None = None,
) -> None:
    """Write ``revision``'s progress row (replacing the one it had), in the transaction.

    ``rows_total`` is written only when given: a progress table an older flowdb created
    (and left part way) has no such column, and its callers check for it first.
    """
    import datetime as dt

    import sqlalchemy as sa

    columns = "revision, phase, rows_done, last_key, updated"
    values = ":r, :phase, :rows, :key, :updated"
    if rows_total is not None:
        columns, values = f"{columns}, rows_total", f"{values}, :total"
    connection.execute(sa.text(_DELETE_PROGRESS), {"r": revision})
    connection.execute(
        sa.text(f"INSERT INTO {PROGRESS_TABLE} ({columns}) VALUES ({values})"),
        {
            "r": revision,
            "phase": phase,
            "rows": rows_done,
            "key": last_key,
            "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "total": rows_total,
        },
    )


def forget_progress(connection: Connection, revision: str) -> None:
    """Delete ``revision``'s progress row; the table goes with its last row.

    So a database with no migration part way through has exactly its revision's schema.
    """
    import sqlalchemy as sa

    if not sa.inspect(connection).has_table(PROGRESS_TABLE):
        return
    connection.execute(sa.text(_DELETE_PROGRESS), {"r": revision})
    if not connection.execute(sa.text(f"SELECT count(*) FROM {PROGRESS_TABLE}")).scalar():
        connection.execute(sa.text(f"DROP TABLE {PROGRESS_TABLE}"))


#: The run record's columns in its newest shape, and those holding booleans (0/1 on
#: SQLite), for readers that read it without SQLAlchemy; ``run_table`` checks them.
RUN_COLUMNS = (
    "id",
    "revision",
    "direction",
    "started_at",
    "duration_ms",
    "flowdb_version",
    "host",
    "pid",
    "db_user",
    "success",
    "error",
    "file_hash",
    "down_revision",
    "serves_previous_code",
)
RUN_BOOLEANS = ("success", "serves_previous_code")


def run_table(version: int | None = None) -> Table:
    """The run record at ``version`` of flowdb's tables (default: the newest).

    SQLAlchemy Core, built on demand, so importing this module stays cheap.
    """
    import sqlalchemy as sa

    columns: list[sa.schema.SchemaItem] = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("revision", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("started_at", sa.String(32), nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("flowdb_version", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("db_user", sa.String(255), nullable=False),
        sa.Column("success", sa.Boolean(create_constraint=False), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("file_hash", sa.String(64), nullable=True),
    ]
    if version is None or version >= 2:
        # What the revision's file declared, so that an older flowdb, which has no file
        # for it, can tell whether it can keep serving (``server.readiness``).
        columns += [
            sa.Column("down_revision", sa.String(32), nullable=True),
            sa.Column("serves_previous_code", sa.Boolean(create_constraint=False), nullable=True),
        ]
    table = sa.Table(RUN_TABLE, sa.MetaData(), *columns)
    assert version is not None or tuple(table.c.keys()) == RUN_COLUMNS, "update RUN_COLUMNS"
    return table


def alembic_version_table() -> Table:
    """Alembic's version table as Alembic creates it (for the fresh install's script)."""
    import sqlalchemy as sa

    return sa.Table(
        ALEMBIC_VERSION_TABLE,
        sa.MetaData(),
        sa.Column(ALEMBIC_VERSION_COLUMN, sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint(ALEMBIC_VERSION_COLUMN, name=f"{ALEMBIC_VERSION_TABLE}_pkc"),
    )


@dataclass(frozen=True)
class Step:
    """One change of flowdb's tables: the version it brings them to, what it does."""

    version: int
    does: str
    apply: Callable[[Connection], None]


def _create_run_table(connection: Connection) -> None:
    """Step 1: the run record as first released (without step 2's columns)."""
    run_table(version=1).create(connection, checkfirst=True)


def _add_declared_columns(connection: Connection) -> None:
    """Step 2: ``down_revision`` and ``serves_previous_code`` (what the file declared)."""
    _add_missing_columns(connection, run_table(), ("down_revision", "serves_previous_code"))


def _add_missing_columns(connection: Connection, table: Table, names: tuple[str, ...]) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for each of ``names`` the table lacks (rerunnable)."""
    import sqlalchemy as sa

    present = {c["name"] for c in sa.inspect(connection).get_columns(table.name)}
    for name in names:
        if name in present:
            continue
        column = table.c[name]
        kind = column.type.compile(dialect=connection.dialect)
        connection.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}")


def _create_replica_table(connection: Connection) -> None:
    """Step 3: the replicas' heartbeats (``fleet``)."""
    connection.exec_driver_sql(CREATE_REPLICAS)


#: Every change of flowdb's tables, oldest first; ``STEPS[n - 1].version == n``.
STEPS: tuple[Step, ...] = (
    Step(1, "create the run record", _create_run_table),
    Step(2, "add down_revision and serves_previous_code", _add_declared_columns),
    Step(3, "create the replicas' heartbeat table", _create_replica_table),
)
LATEST = STEPS[-1].version


def version_statements() -> list[str]:
    """Plain SQL that records the newest version (the fresh install creates the newest shape)."""
    return [
        CREATE_REPLICAS,
        CREATE_VERSION,
        f"DELETE FROM {VERSION_TABLE}",
        _insert_version(LATEST),
    ]


def _insert_version(version: int) -> str:
    return f"INSERT INTO {VERSION_TABLE} (version) VALUES ({int(version)})"


def recorded_version(connection: Connection) -> int | None:
    """The version row, or ``None`` when there is none (a database of an earlier release)."""
    import sqlalchemy as sa

    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return None
    found = connection.exec_driver_sql(f"SELECT MAX(version) FROM {VERSION_TABLE}").scalar()
    return None if found is None else int(found)


def read_version(connection: Connection) -> int:
    """The version of flowdb's tables in the database; 0 when there are none. Reads only.

    Without a version row (made by a release before this table existed) the run
    record's columns tell: step 2's columns or not.
    """
    import sqlalchemy as sa

    recorded = recorded_version(connection)
    if recorded is not None:
        return recorded
    inspector = sa.inspect(connection)
    if not inspector.has_table(RUN_TABLE):
        return 0
    columns = {c["name"] for c in inspector.get_columns(RUN_TABLE)}
    return 2 if "down_revision" in columns else 1


def upgrade(connection: Connection) -> list[Step]:
    """Bring flowdb's tables to the newest shape on ``connection``, in its transaction.

    The caller holds the migration lock. A database without them gets the newest shape
    at once; an older one gets the steps it lacks, in order. A newer one (a newer
    flowdb's) is left as it is. Returns the steps run.
    """
    recorded = recorded_version(connection)
    if recorded is not None and recorded >= LATEST:
        return []
    version = read_version(connection)
    if version >= LATEST:  # the newest shape without its row (an earlier release made it)
        done: list[Step] = []
    elif version == 0:
        run_table().create(connection, checkfirst=True)
        connection.exec_driver_sql(CREATE_REPLICAS)
        done = []
    else:
        done = list(STEPS[version:])
        for step in done:
            step.apply(connection)
    connection.exec_driver_sql(CREATE_VERSION)
    connection.exec_driver_sql(f"DELETE FROM {VERSION_TABLE}")
    connection.exec_driver_sql(_insert_version(LATEST))
    return done

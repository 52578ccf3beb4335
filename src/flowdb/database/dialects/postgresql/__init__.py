"""PostgreSQL: for teams running several API replicas against one database.

* Migrations: psycopg 3, one transaction per migration (PostgreSQL's DDL is
  transactional), a connect timeout so that an unreachable server fails fast, and the
  migrations' own ``statement_timeout`` (``FLOWDB_MIGRATION_STATEMENT_TIMEOUT``, none
  by default) whatever the role or database sets for the API.
* The migration lock: a session advisory lock on a fixed key, held on a dedicated
  autocommit connection for the whole command. The holder's identity travels in that
  connection's ``application_name``, where waiters read it from ``pg_stat_activity``
  (of this database only: advisory locks are per database). A holder that dies loses
  its session and with it the lock.
* Behind PgBouncer (or another pooler) in transaction pooling mode (detected:
  ``detect_transaction_pooler``, or forced with ``FLOWDB_DATABASE_POOL_MODE``) a
  client's statements may run on a different server connection in each transaction,
  so nothing may live in a session:
  the migration lock is the same key taken with ``pg_try_advisory_xact_lock`` in a
  transaction kept open for the whole command (the pooler pins one server connection
  to it; a holder that dies takes its server connection, and the lock, with it); the
  timeouts (and the URL's own ``options``) are set locally at the start of each
  transaction instead of startup options (which PgBouncer refuses); psycopg never
  prepares statements and asyncpg's
  statement caches are off, with unique names for the statements it must prepare.
  Locks of both modes exclude each other, so direct and pooled commands mix safely.
* A schema chosen in the URL (``options=-csearch_path=tenant_a``) holds everywhere:
  flowdb's own startup options are added to the URL's, never put in their place, and
  the migration lock is per schema (the key's high half is a hash of the current
  schema; ``public`` keeps the historic key), so tenants in one database migrate
  independently.
* Fencing: the lock's session can end (killed, dropped) while the command's migration
  connection, another session, goes on. So every migration transaction first takes a
  second advisory key, the fence, as a transaction lock, then checks that the lock
  session still holds the lock (and checks again before a migration commits); a new
  holder waits until no one holds the fence before it reads the database. A step in
  flight when the old holder's session died therefore ends (committed or rolled back)
  before the new holder looks, and the old holder's next transaction finds the lock
  gone and stops (``MigrationLockLostError``). Concurrent index builds, which run
  outside a transaction, hold the fence as a session lock until the next transaction.
* The server: asyncpg with the API's own statement timeout
  (``FLOWDB_SERVER_QUERY_TIMEOUT``). URL parameters are translated for each driver:
  libpq's (``sslmode``, ``connect_timeout``, ``application_name``, ``options``) for
  asyncpg, asyncpg's (``ssl``, ``timeout``) for psycopg, so one URL serves both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from flowdb.database.dialects.base import Catalog, Features, dump_command_line
from flowdb.database.dialects.postgresql import catalogue, cleaning, errors
from flowdb.database.dialects.postgresql.connecting import (
    CONNECT_TIMEOUT_SECONDS,
    SERVER_APPLICATION_NAME,
    PostgresConnecting,
    detect_transaction_pooler,
    dumps_keeping_floats,
)
from flowdb.database.dialects.postgresql.errors import sqlstate
from flowdb.database.dialects.postgresql.lock import (
    ADVISORY_LOCK_KEY,
    FENCE_KEY,
    PostgresLocking,
    _holder,
    fence_key,
    lock_key,
)
from flowdb.database.dialects.postgresql.parameters import _asyncpg_connect_args
from flowdb.database.lockinfo import Waiter
from flowdb.errors import FlowdbError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = [
    "ADVISORY_LOCK_KEY",
    "CONNECT_TIMEOUT_SECONDS",
    "FENCE_KEY",
    "SERVER_APPLICATION_NAME",
    "PostgresConnecting",
    "PostgresDialect",
    "_asyncpg_connect_args",
    "detect_transaction_pooler",
    "dumps_keeping_floats",
    "fence_key",
    "lock_key",
    "sqlstate",
]

#: How long one read of the catalog waits for a table lock before asking who holds it.
_READ_LOCK_TIMEOUT_MS = 500


class PostgresDialect(PostgresLocking):
    """PostgreSQL 12 or newer: connecting and locking from its layers, the rest here."""

    features: ClassVar[Features] = Features(
        native_enums=True, concurrent_indexes=True, deferred_validation=True
    )

    # --- reading without writing ----------------------------------------------------------

    def read_catalog(self, waiter: Waiter) -> Catalog:
        """Version rows and the tables of the current schema; waits out a DDL's table lock.

        One read-only REPEATABLE READ transaction, so the progress and version rows are
        one snapshot (a migration's commit changes both at once). Table names are looked
        up outside that snapshot, though: a table a migration drops after the listing is
        "undefined" when read, and the read starts again (``table_vanished``).
        """
        import sqlalchemy as sa
        from sqlalchemy.exc import OperationalError

        engine = self.create_sync_engine("flowdb-status", statement_timeout=0)
        try:
            with engine.connect() as plain:
                connection = plain.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
                while True:
                    try:
                        # In the read's own transaction: no session state (poolers).
                        connection.execute(
                            sa.text(f"SET LOCAL lock_timeout = {_READ_LOCK_TIMEOUT_MS}")
                        )
                        return catalogue.read_catalog_once(connection)
                    except OperationalError as exc:
                        if sqlstate(exc) != errors.LOCK_NOT_AVAILABLE:
                            raise
                        connection.rollback()
                        waiter.still_waiting(
                            _holder(connection), other="another session changing the schema"
                        )
        finally:
            engine.dispose()

    def table_vanished(self, exc: BaseException) -> bool:
        """``undefined_table`` (42P01), or a relation dropped while its lock was awaited."""
        source = getattr(exc, "orig", None) or exc
        # "could not open relation with OID" is an internal error (XX000, shared with
        # every other one); its text is never translated (elog), so it is matched.
        return (
            super().table_vanished(exc)
            or sqlstate(exc) == errors.UNDEFINED_TABLE
            or "could not open relation with OID" in str(source)
        )

    @classmethod
    def read_index_build(cls, connection: Connection, table: str) -> tuple[str, int, int] | None:
        """From ``pg_stat_progress_create_index`` for ``table``: blocks, then tuples."""
        import sqlalchemy as sa

        row = connection.execute(
            sa.text(
                "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total "
                "FROM pg_stat_progress_create_index "
                "WHERE datname = current_database() AND relid = to_regclass(:table) LIMIT 1"
            ),
            {"table": table},
        ).first()
        if row is None:
            return None
        phase, blocks_done, blocks_total, tuples_done, tuples_total = row
        if tuples_total:
            return (str(phase), int(tuples_done or 0), int(tuples_total))
        return (str(phase), int(blocks_done or 0), int(blocks_total or 0))

    def index_build_progress(self) -> tuple[str, int, int] | None:
        """From ``pg_stat_progress_create_index``: blocks while scanning, tuples after."""
        import sqlalchemy as sa

        query = sa.text(
            "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total "
            "FROM pg_stat_progress_create_index WHERE datname = current_database() LIMIT 1"
        )
        engine = self.create_sync_engine("flowdb-status", statement_timeout=0)
        try:
            with engine.connect() as connection:
                row = connection.execute(query).first()
        finally:
            engine.dispose()
        if row is None:
            return None
        phase, blocks_done, blocks_total, tuples_done, tuples_total = row
        if tuples_total:
            return (str(phase), int(tuples_done), int(tuples_total))
        return (str(phase), int(blocks_done or 0), int(blocks_total or 0))

    def untracked_server_sessions(self, connection: Connection, application_name: str) -> list[str]:
        """Client addresses with sessions named ``application_name`` in this database."""
        import sqlalchemy as sa

        rows = connection.execute(
            sa.text(
                "SELECT DISTINCT COALESCE(host(client_addr), 'local socket') FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = :name "
                "AND pid <> pg_backend_pid() ORDER BY 1"
            ),
            {"name": application_name},
        ).scalars()
        return [str(row) for row in rows]

    @contextmanager
    def cleaner_lock(self) -> Iterator[bool]:
        """A session advisory lock of its own (a transaction lock behind a pooler)."""
        engine = self.create_sync_engine("flowdb-clean-lock")
        try:
            with cleaning.cleaner_lock(engine, self.transaction_pooling) as held:
                yield held
        finally:
            engine.dispose()

    def reclaim_space(self, tables: list[str]) -> str:
        """``VACUUM (ANALYZE)`` of the cleaned tables (autovacuum would do it later)."""
        engine = self.create_sync_engine("flowdb-clean")
        try:
            return cleaning.reclaim_space(engine, tables)
        finally:
            engine.dispose()

    def dump_command(self) -> str | None:
        """``pg_dump`` in its custom format (``pg_restore`` reads it) of this database."""
        name = str(self.url.url.database)
        flags = {"host": "-h", "port": "-p", "username": "-U"}
        return dump_command_line("pg_dump", self.url, flags, ["-Fc", "-f", f"{name}.dump", name])

    # --- maintenance ------------------------------------------------------------------------

    def drop_statements(self, tables: list[str], enum_types: tuple[str, ...]) -> list[str]:
        """``DROP TABLE IF EXISTS ... CASCADE`` each table, then the enum types."""
        return [f'DROP TABLE IF EXISTS "{name}" CASCADE' for name in tables] + [
            f'DROP TYPE IF EXISTS "{name}"' for name in enum_types
        ]

    def clear_statements(self, tables: list[str]) -> list[str]:
        """One ``TRUNCATE`` of every table."""
        return ["TRUNCATE " + ", ".join(f'"{name}"' for name in tables)]

    def translate_error(self, exc: BaseException, text: str) -> FlowdbError | None:
        """Connection failures, permissions, timeouts, a full disk: by SQLSTATE (``errors``)."""
        return errors.translate_error(exc, text, self.url.redacted())

    def server_timeout_message(self, exc: BaseException, text: str) -> str | None:
        """A ``statement_timeout`` on the API's engine: FLOWDB_SERVER_QUERY_TIMEOUT ran out."""
        return errors.server_timeout_message(exc, self.settings.server_query_timeout)

    def is_lock_timeout(self, exc: BaseException) -> bool:
        """SQLSTATE 55P03 (lock_not_available): ``lock_timeout`` ran out."""
        return errors.is_lock_timeout(exc)

    def describe_blockers(self, connection: Connection, tables: frozenset[str]) -> str:
        """The oldest other transaction holding a lock on ``tables``: pid, application, age."""
        import sqlalchemy as sa

        row = connection.execute(
            sa.text(
                "SELECT a.pid, a.application_name, a.state, "
                "extract(epoch FROM now() - a.xact_start) "
                "FROM pg_stat_activity a WHERE a.pid <> pg_backend_pid() "
                "AND a.xact_start IS NOT NULL AND a.pid IN ("
                "  SELECT l.pid FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "  WHERE l.granted AND c.relname = ANY(:tables) AND l.database = "
                "  (SELECT oid FROM pg_database WHERE datname = current_database())"
                ") ORDER BY a.xact_start LIMIT 1"
            ),
            {"tables": sorted(tables)},
        ).first()
        if row is None:
            return "a session that has finished since"
        pid, application, state, age = row
        return (
            f"pid {pid} (application {application or '?'!r}, {state or 'active'}, "
            f"transaction open for {float(age or 0):.0f} s)"
        )

    # --- SQL for migration helpers ------------------------------------------------------------

    @staticmethod
    def text_position(needle: str, column: str) -> str:
        """``strpos``."""
        return f"strpos({column}, '{needle}')"

    # --- snapshots (flowdb.database.fresh; the work is in postgresql_catalogue) ----------------

    def current_user_sql(self) -> str:
        """The session's role."""
        return "current_user"

    def dump_schema(self, exclude: frozenset[str]) -> list[str]:
        """``pg_dump`` of the current schema, made schema-neutral."""
        import sqlalchemy as sa

        engine = self.create_sync_engine("flowdb-snapshot", statement_timeout=0)
        try:
            with engine.connect() as connection:
                schema = str(connection.execute(sa.text("SELECT current_schema()")).scalar())
        finally:
            engine.dispose()
        return catalogue.dump(self.sync_url, schema, exclude)

    def catalogue(self, skip_rows: frozenset[str]) -> dict[str, Any]:
        """Tables, constraints, indexes, enum types, sequences and rows from ``pg_catalog``."""

        engine = self.create_sync_engine("flowdb-catalogue", statement_timeout=0)
        try:
            with engine.connect() as connection:
                return catalogue.catalogue(connection, skip_rows)
        finally:
            engine.dispose()

"""MariaDB 10.7+ and MySQL 8: for operators whose database server is one of them.

* Connections: PyMySQL for migrations and one-off commands, aiomysql for the API
  server; always ``utf8mb4``, UTC as the session time zone (flowdb stores UTC without a
  zone on these servers, as on SQLite), a connect timeout so that an unreachable server
  fails fast. URLs ``mysql://``, ``mariadb://`` and their ``+pymysql``/``+aiomysql``
  forms name the same dialect; the password is never shown.
* Before migrating, the server must be new enough (MariaDB 10.7, MySQL 8.0) and the
  database's default character set must be ``utf8mb4``: each is one line saying what
  is needed.
* The migration lock: ``GET_LOCK`` on a name derived from the database's name, polled
  with a zero wait until ``FLOWDB_MIGRATION_LOCK_TIMEOUT``; the server releases it when
  the holder's connection ends. Waiters find the holder with ``IS_USED_LOCK`` and name it
  from the process list: its connection id, its client's address and port, and when it
  last sent a statement; a holder is called a flowdb command only when its connection
  says so (``program_name``, visible where ``performance_schema`` is on).
* Fencing: killing the lock's connection does not stop the migration's own connection.
  That connection holds a second lock, the fence, for its whole run, and checks that the
  lock's connection still holds the lock as each migration (and each batch of a data
  migration) begins; a new holder waits until the fence is free before it reads the
  database. DDL commits by itself here, so a holder that lost its lock may finish the
  step it is in (its version row then commits, fenced), but it starts no other, and no
  one else starts one before it has stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from flowdb.database.dialects.base import Catalog, Features, dump_command_line
from flowdb.database.dialects.mysql import catalogue, cleaning, errors
from flowdb.database.dialects.mysql.connecting import (
    CONNECT_TIMEOUT_SECONDS,
    MINIMUM_MARIADB,
    MINIMUM_MYSQL,
    server_problem,
)
from flowdb.database.dialects.mysql.errors import error_code
from flowdb.database.dialects.mysql.lock import MysqlLocking
from flowdb.database.dialects.mysql.sql import MysqlSql
from flowdb.database.lockinfo import Waiter
from flowdb.errors import FlowdbError

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "MINIMUM_MARIADB",
    "MINIMUM_MYSQL",
    "MariadbDialect",
    "MysqlDialect",
    "server_problem",
]


class MysqlDialect(MysqlSql, MysqlLocking):
    """MySQL 8.0 or newer (``mysql://`` URLs); MariaDB shares this class's behaviour."""

    features: ClassVar[Features] = Features(stores_time_zones=False, ddl_commits=True)

    def read_catalog(self, waiter: Waiter) -> Catalog:
        """Version rows and the base tables of the database, from ``information_schema``.

        Views are not tables (as on PostgreSQL and SQLite). The rows are read in one
        REPEATABLE READ transaction (one snapshot), but the listing is not part of it and
        DDL commits by itself here: a table listed may be gone by the time it is read (a
        migration drops ``flowdb_migration_progress`` when it finishes), or changed since
        the snapshot; the read then starts again (``table_vanished``).
        """
        engine = self.create_sync_engine("flowdb-status")
        try:
            with engine.connect() as plain:
                connection = plain.execution_options(isolation_level="REPEATABLE READ")
                catalog = catalogue.read_catalog_once(connection)
                connection.rollback()
                return catalog
        finally:
            engine.dispose()

    def table_vanished(self, exc: BaseException) -> bool:
        """No such table (1146), or a table changed since this transaction's snapshot (1412)."""
        return super().table_vanished(exc) or error_code(exc) in errors.VANISHED

    @contextmanager
    def cleaner_lock(self) -> Iterator[bool]:
        """A ``GET_LOCK`` name of its own, per database (InnoDB reuses freed pages)."""
        engine = self.create_sync_engine("flowdb-clean-lock")
        try:
            with cleaning.cleaner_lock(engine, str(self.url.url.database)) as held:
                yield held
        finally:
            engine.dispose()

    def reclaim_space(self, tables: list[str]) -> str:
        """Nothing to run: InnoDB reuses the freed pages by itself."""
        return "InnoDB reuses the freed pages for new rows"

    def dump_command(self) -> str | None:
        """The server's dump tool, one consistent transaction, into ``<database>.sql``."""
        name = str(self.url.url.database)
        flags = {"host": "-h", "port": "-P", "username": "-u"}
        tail = ["--single-transaction", "--routines", f"--result-file={name}.sql", name]
        return dump_command_line(self.dump_tool, self.url, flags, tail)

    def translate_error(self, exc: BaseException, text: str) -> FlowdbError | None:
        """Connection failures, permissions, timeouts, full disks: by number (``errors``)."""
        return errors.translate_error(exc, text, self.url.redacted())

    def is_lock_timeout(self, exc: BaseException) -> bool:
        """Error 1205 (lock wait timeout) or 3572 (NOWAIT)."""
        return errors.is_lock_timeout(exc)

    # --- snapshots (flowdb.database.fresh; the work is in mysql_catalogue) --------------------

    def current_user_sql(self) -> str:
        """The account the server authenticated (``user@host``), not this OS user."""
        return "CURRENT_USER()"

    def run_script(self, statements: list[str]) -> None:
        """Run ``statements`` in order on one connection, foreign key checks off.

        Each DDL statement commits by itself (and what came before it); the statements
        after the last DDL commit together at the end. Checks are off because
        flow_run and flow_run_state refer to each other: neither can be created first.
        """
        super().run_script(["SET SESSION foreign_key_checks = 0", *statements])

    def dump_schema(self, exclude: frozenset[str]) -> list[str]:
        """The server's own ``CREATE`` text of each table, rerunnable, then the rows."""
        engine = self.create_sync_engine("flowdb-snapshot")
        try:
            with engine.connect() as connection:
                return catalogue.dump(connection, exclude)
        finally:
            engine.dispose()

    def catalogue(self, skip_rows: frozenset[str]) -> dict[str, Any]:
        """Tables (columns in order, keys and constraints sorted, options) and rows."""
        engine = self.create_sync_engine("flowdb-catalogue")
        try:
            with engine.connect() as connection:
                return catalogue.catalogue(connection, skip_rows)
        finally:
            engine.dispose()


class MariadbDialect(MysqlDialect):
    """MariaDB 10.7 or newer (``mariadb://`` URLs)."""

    name: ClassVar[str] = "mariadb"
    label: ClassVar[str] = "MariaDB"
    sync_driver: ClassVar[str] = "mariadb+pymysql"
    dump_tool: ClassVar[str] = "mariadb-dump"
    async_driver: ClassVar[str] = "mariadb+aiomysql"

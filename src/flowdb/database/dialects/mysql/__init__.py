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

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from flowdb.database.dialects.base import (
    Catalog,
    Dialect,
    dump_command_line,
    validate_server_url,
)
from flowdb.errors import (
    DatabaseBusyError,
    DatabaseReadOnlyError,
    DatabaseUnreachableError,
    DiskFullError,
    FlowdbError,
    UnsupportedServerError,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from flowdb.database.locking import LockHolder, Waiter
    from flowdb.database.urls import DatabaseUrl

CONNECT_TIMEOUT_SECONDS = 10
#: Oldest servers flowdb supports: (major, minor).
#: 10.7 brought the native ``uuid`` column type that flowdb's MariaDB schema uses.
MINIMUM_MARIADB = (10, 7)
MINIMUM_MYSQL = (8, 0)
_LOCK_PREFIX = "flowdb-migrations:"
#: A table listed and then read is gone (1146), or was changed after the snapshot (1412).
_VANISHED = frozenset({1146, 1412})
_FENCE_PREFIX = "flowdb-fence:"
#: The lock connection's ``program_name``: how a waiter knows the holder is flowdb.
_PROGRAM_PREFIX = "flowdb-lock"


class MysqlDialect(Dialect):
    """MySQL 8.0 or newer (``mysql://`` URLs); MariaDB shares this class's behaviour."""

    name: ClassVar[str] = "mysql"
    label: ClassVar[str] = "MySQL"
    drivers: ClassVar[frozenset[str]] = frozenset({"", "pymysql", "aiomysql"})
    sync_driver: ClassVar[str] = "mysql+pymysql"
    async_driver: ClassVar[str] = "mysql+aiomysql"
    stores_time_zones: ClassVar[bool] = False
    ddl_commits: ClassVar[bool] = True
    #: The server's dump tool, named in a downgrade's plan.
    dump_tool: ClassVar[str] = "mysqldump"
    schema_function: ClassVar[str] = "DATABASE()"

    @classmethod
    def validate_url(cls, url: DatabaseUrl, shown: str) -> None:
        """A database name is required; a bare ``@`` in the password is refused."""
        validate_server_url(url, shown, f"{cls.name}+pymysql://user@host:3306/flowdb")

    # --- engines ------------------------------------------------------------------------

    @property
    def sync_url(self) -> Any:
        """PyMySQL, utf8mb4."""
        query = {**self.url.url.query, "charset": "utf8mb4"}
        return self._driver_password(self.url.url.set(drivername=self.sync_driver, query=query))

    @property
    def async_url(self) -> Any:
        """aiomysql, utf8mb4."""
        query = {**self.url.url.query, "charset": "utf8mb4"}
        return self._driver_password(self.url.url.set(drivername=self.async_driver, query=query))

    @staticmethod
    def _driver_password(url: Any) -> Any:
        """``url`` with a non-ASCII password in the form PyMySQL and aiomysql send right.

        Both drivers encode a text password as latin-1, while the server compares it
        with the UTF-8 bytes it was set from (utf8mb4 clients): a correct non-ASCII
        password would be refused as wrong. Its UTF-8 bytes read as latin-1 are sent as
        those bytes.
        """
        password = url.password
        if password is None or password.isascii():
            return url
        return url.set(password=password.encode("utf-8").decode("latin-1"))

    def create_sync_engine(self, application_name: str, program_name: str = "") -> Engine:
        """PyMySQL, unpooled, UTC sessions, a connect timeout, the DDL lock wait bounded.

        ``program_name`` is sent as the connection attribute of that name.
        """
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        lock_wait = max(1, round(self.settings.migration_ddl_lock_timeout))
        # The history's SQL is standard: || concatenates, double quotes name things.
        init = (
            f"SET time_zone = '+00:00', lock_wait_timeout = {lock_wait}, "
            "sql_mode = CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,ANSI_QUOTES')"
        )
        connect_args: dict[str, Any] = {"init_command": init}
        if program_name:
            connect_args["program_name"] = program_name
        if "connect_timeout" not in self.url.url.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        return create_engine(self.sync_url, poolclass=NullPool, connect_args=connect_args)

    def create_async_engine(self, *, write: bool) -> AsyncEngine:
        """aiomysql with UTC sessions; one engine serves reads and writes."""
        from sqlalchemy.ext.asyncio import create_async_engine

        return create_async_engine(
            self.async_url,
            pool_pre_ping=True,
            pool_recycle=3600,
            connect_args={"init_command": "SET time_zone = '+00:00'"},
        )

    def check_migratable(self) -> None:
        """Refuse a server older than MariaDB 10.7 / MySQL 8.0, or a non-utf8mb4 database."""
        import sqlalchemy as sa

        engine = self.create_sync_engine("flowdb-check")
        try:
            with engine.connect() as connection:
                version = str(connection.execute(sa.text("SELECT VERSION()")).scalar())
                charset = connection.execute(
                    sa.text(
                        "SELECT default_character_set_name FROM information_schema.schemata "
                        "WHERE schema_name = DATABASE()"
                    )
                ).scalar()
        except Exception as exc:
            from flowdb.database.dialects.base import first_line

            translated = self.translate_error(exc, first_line(exc))
            if translated is None:
                raise
            raise translated from None
        finally:
            engine.dispose()
        problem = server_problem(version)
        if problem:
            raise UnsupportedServerError(
                f"The server of {self.url.redacted()} runs {problem}; flowdb needs MariaDB "
                f"{'.'.join(map(str, MINIMUM_MARIADB))} or MySQL "
                f"{'.'.join(map(str, MINIMUM_MYSQL))} or newer."
            )
        if charset != "utf8mb4":
            database = self.url.url.database
            raise UnsupportedServerError(
                f"The database {database!r} at {self.url.redacted()} has the default "
                f"character set {charset!r}; flowdb needs utf8mb4: run ALTER DATABASE "
                f"`{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci (or create "
                "it with that character set)."
            )

    # --- reading without writing ----------------------------------------------------------

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
                catalog = _read_catalog_once(connection)
                connection.rollback()
                return catalog
        finally:
            engine.dispose()

    def table_vanished(self, exc: BaseException) -> bool:
        """No such table (1146), or a table changed since this transaction's snapshot (1412)."""
        return super().table_vanished(exc) or _error_code(exc) in _VANISHED

    # --- the migration lock ---------------------------------------------------------------

    @property
    def lock_name(self) -> str:
        """The ``GET_LOCK`` name: per database (locks are server-wide), at most 64 chars."""
        return (_LOCK_PREFIX + str(self.url.url.database))[:64]

    @property
    def fence_name(self) -> str:
        """The fence's ``GET_LOCK`` name, held by the lock holder's migration connection."""
        return (_FENCE_PREFIX + str(self.url.url.database))[:64]

    @contextmanager
    def migration_lock(self, command: str, waiter: Waiter) -> Iterator[None]:
        """``GET_LOCK(name, 0)`` on its own connection, polled until the timeout.

        Then, before the block, waits until the fence is free: a migration connection
        of a holder that lost the lock has stopped.
        """
        import sqlalchemy as sa

        from flowdb.database.locking import POLL_SECONDS, me

        holder = me(command)
        engine = self.create_sync_engine(
            "flowdb-lock",
            program_name=f"{_PROGRAM_PREFIX} {command} pid={holder.pid} host={holder.host}",
        )
        try:
            with engine.connect() as raw_connection:
                connection = raw_connection.execution_options(isolation_level="AUTOCOMMIT")
                take = sa.text("SELECT GET_LOCK(:name, 0)")
                while connection.execute(take, {"name": self.lock_name}).scalar() != 1:
                    waiter.still_waiting(_holder(connection, self.lock_name))
                    time.sleep(min(POLL_SECONDS, waiter.remaining()))
                try:
                    self._wait_for_fence(connection, waiter)
                    self.lock_session = connection
                    yield
                finally:
                    self.lock_session = None
                    self._release(connection)
        finally:
            engine.dispose()

    def _wait_for_fence(self, connection: Connection, waiter: Waiter) -> None:
        """Wait until no connection holds the fence (a lost holder's migration stopped)."""
        import sqlalchemy as sa

        from flowdb.database.locking import POLL_SECONDS

        query = sa.text("SELECT IS_USED_LOCK(:name)")
        while (owner := connection.execute(query, {"name": self.fence_name}).scalar()) is not None:
            waiter.still_waiting(
                None,
                other=f"a migration still running on server connection {owner} for a command "
                "that lost the lock",
            )
            time.sleep(min(POLL_SECONDS, max(waiter.remaining(), 0.01)))

    def _release(self, connection: Connection) -> None:
        """``RELEASE_LOCK``; a connection that has ended already lost the lock with it."""
        import logging

        import sqlalchemy as sa

        from flowdb.database.dialects.base import first_line

        try:
            connection.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": self.lock_name})
        except sa.exc.SQLAlchemyError as exc:
            logging.getLogger("flowdb.migrations.lock").warning(
                "The migration lock's connection to %s had ended before the lock was released "
                "(%s); the server released the lock with it.",
                self.url.redacted(),
                first_line(exc),
            )

    def take_fence(self, dbapi_connection: Any) -> None:
        """The fence, once per migration connection, held until that connection closes.

        Found held by another connection: a command that lost the lock is stopped here
        (``check_lock``); otherwise that connection's holder is stopping, and is waited
        for up to the lock timeout.
        """
        from flowdb.errors import MigrationLockTimeoutError

        name = self.fence_name
        cursor = dbapi_connection.cursor()
        try:
            take = "SELECT IF(IS_USED_LOCK(%s) <=> CONNECTION_ID(), 1, GET_LOCK(%s, %s))"
            cursor.execute(take, (name, name, 0))
            if cursor.fetchone()[0] == 1:
                return
            self.check_lock(dbapi_connection)
            wait = max(1, round(self.settings.migration_lock_timeout))
            cursor.execute(take, (name, name, wait))
            if cursor.fetchone()[0] != 1:
                raise MigrationLockTimeoutError(
                    f"Timed out after {wait} s waiting for the migration fence of "
                    f"{self.describe()} ({name!r}), held by a command that lost the lock; "
                    "nothing was changed. Run the command again."
                )
        finally:
            cursor.close()

    def lock_still_held(self) -> bool:
        """The lock's connection answers and is the one the server says holds the lock."""
        import sqlalchemy as sa

        if self.lock_session is None:
            return False
        query = sa.text("SELECT IS_USED_LOCK(:name) <=> CONNECTION_ID()")
        try:
            return bool(self.lock_session.execute(query, {"name": self.lock_name}).scalar())
        except sa.exc.SQLAlchemyError:
            return False

    def migration_running(self) -> LockHolder | None:
        """The connection holding flowdb's lock for this database, from the process list."""
        engine = self.create_sync_engine("flowdb-status")
        try:
            with engine.connect() as connection:
                return _holder(connection, self.lock_name)
        finally:
            engine.dispose()

    def dump_command(self) -> str | None:
        """The server's dump tool, one consistent transaction, into ``<database>.sql``."""
        name = str(self.url.url.database)
        flags = {"host": "-h", "port": "-P", "username": "-u"}
        tail = ["--single-transaction", "--routines", f"--result-file={name}.sql", name]
        return dump_command_line(self.dump_tool, self.url, flags, tail)

    # --- maintenance ------------------------------------------------------------------------

    def drop_statements(self, tables: list[str], enum_types: tuple[str, ...]) -> list[str]:
        """``DROP TABLE IF EXISTS`` each table; enums live in columns.

        Foreign key checks are off for the drops: flow_run and flow_run_state refer to
        each other, and MySQL has no ``CASCADE`` for ``DROP TABLE``.
        """
        drops = [f"DROP TABLE IF EXISTS `{name}`" for name in tables]
        return ["SET FOREIGN_KEY_CHECKS = 0", *drops, "SET FOREIGN_KEY_CHECKS = 1"]

    def clear_statements(self, tables: list[str]) -> list[str]:
        """``DELETE`` every row of each table, children first (foreign keys stay checked)."""
        return [f"DELETE FROM `{name}`" for name in tables]

    def count_rows(self, connection: Connection, table: str, column: str | None = None) -> int:
        """Rows of ``table`` (with a non-null ``column`` when given), backtick-quoted."""
        import sqlalchemy as sa

        where = f" WHERE `{column}` IS NOT NULL" if column else ""
        value = connection.execute(sa.text(f"SELECT count(*) FROM `{table}`{where}")).scalar()
        return int(value or 0)

    # --- errors -----------------------------------------------------------------------------

    def translate_error(self, exc: BaseException, text: str) -> FlowdbError | None:
        """Connection failures, unknown databases, permissions, timeouts, full disks.

        Matched on the server's (or the client library's, 2000-2999) error number, which
        every error of PyMySQL and aiomysql carries; ``text`` is only quoted.
        """
        code = _error_code(exc)
        where = self.url.redacted()
        if code in (1045, 1044, 1049, 2003, 2005, 2006, 2013):
            reason = {
                1045: "access denied: wrong user or password",
                1044: "access denied to the database for this user",
                1049: "unknown database",
            }.get(code or 0, "cannot reach the server")
            return DatabaseUnreachableError(
                f"Cannot connect to the database at {where} ({reason}); check that the "
                "server is running and that FLOWDB_DATABASE_URL names the right host, port, "
                "user, password and database."
            )
        if code in (1205, 3572):
            return DatabaseBusyError(
                f"A table of {where} stayed locked by another session ({text}); find it in "
                "SHOW PROCESSLIST, let it finish, and run the command again."
            )
        if code in (1290, 1792):
            return DatabaseReadOnlyError(
                f"The database at {where} is read-only ({text}); connect to the primary server."
            )
        if code in (1142, 1227, 1143):
            return DatabaseReadOnlyError(
                f"The database user may not do this on {where} ({text}); connect as a user "
                "that may read, create and alter flowdb's tables."
            )
        if code in (1021, 1114, 3):
            return DiskFullError(
                f"The server of {where} ran out of disk space ({text}); free space on the "
                "server and run the command again."
            )
        return None

    def is_lock_timeout(self, exc: BaseException) -> bool:
        """Error 1205 (lock wait timeout) or 3572 (NOWAIT)."""
        return _error_code(exc) in (1205, 3572)

    # --- SQL for migration helpers ------------------------------------------------------------

    @staticmethod
    def text_position(needle: str, column: str) -> str:
        """``LOCATE``."""
        return f"LOCATE('{needle}', {column})"

    @staticmethod
    def timestamp_type() -> Any:
        """``DATETIME(6)``: microseconds, like the other dialects (plain DATETIME has none)."""
        from sqlalchemy.dialects import mysql

        return mysql.DATETIME(fsp=6)

    @staticmethod
    def as_text(expression: str) -> str:
        """``CAST(... AS CHAR)``: MySQL casts to CHAR, not TEXT."""
        return f"CAST({expression} AS CHAR)"

    @staticmethod
    def upsert_update(key: str, columns: list[str]) -> str:
        """``ON DUPLICATE KEY UPDATE c = VALUES(c)``."""
        updates = ", ".join(f"{column} = VALUES({column})" for column in columns)
        return f"ON DUPLICATE KEY UPDATE {updates}"

    @staticmethod
    def drop_index_if_exists(name: str) -> str:
        """``DROP INDEX IF EXISTS name ON table``: the table from flowdb's ``ix_<table>__``."""
        table = name.removeprefix("ix_").split("__", 1)[0]
        return f"DROP INDEX IF EXISTS {name} ON {table}"

    @classmethod
    def set_not_null(cls, connection: Connection, table: str, column: str) -> str:
        """``MODIFY`` the column with its current type, NOT NULL (MySQL has no SET NOT NULL)."""
        import sqlalchemy as sa

        column_type = connection.execute(
            sa.text(
                "SELECT column_type FROM information_schema.columns WHERE table_schema = "
                "DATABASE() AND table_name = :table AND column_name = :column"
            ),
            {"table": table, "column": column},
        ).scalar()
        return f"ALTER TABLE {table} MODIFY {column} {column_type} NOT NULL"

    @classmethod
    def has_constraint(cls, connection: Connection, table: str, name: str) -> bool:
        """From ``information_schema.table_constraints`` of the current database."""
        import sqlalchemy as sa

        found = connection.execute(
            sa.text(
                "SELECT 1 FROM information_schema.table_constraints WHERE constraint_schema = "
                "DATABASE() AND table_name = :table AND constraint_name = :name"
            ),
            {"table": table, "name": name},
        ).first()
        return found is not None

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
        from flowdb.database.dialects.mysql import catalogue as mysql_catalogue

        engine = self.create_sync_engine("flowdb-snapshot")
        try:
            with engine.connect() as connection:
                return mysql_catalogue.dump(connection, exclude)
        finally:
            engine.dispose()

    def catalogue(self, skip_rows: frozenset[str]) -> dict[str, Any]:
        """Tables (columns in order, keys and constraints sorted, options) and rows."""
        from flowdb.database.dialects.mysql import catalogue as mysql_catalogue

        engine = self.create_sync_engine("flowdb-catalogue")
        try:
            with engine.connect() as connection:
                return mysql_catalogue.catalogue(connection, skip_rows)
        finally:
            engine.dispose()


class MariadbDialect(MysqlDialect):
    """MariaDB 10.7 or newer (``mariadb://`` URLs)."""

    name: ClassVar[str] = "mariadb"
    label: ClassVar[str] = "MariaDB"
    sync_driver: ClassVar[str] = "mariadb+pymysql"
    dump_tool: ClassVar[str] = "mariadb-dump"
    async_driver: ClassVar[str] = "mariadb+aiomysql"


def server_problem(version: str) -> str:
    """What is too old about a server ``VERSION()`` string, or ``""`` when it will do."""
    import re

    found = re.match(r"(\d+)\.(\d+)", version)
    if not found:
        return ""
    number = (int(found.group(1)), int(found.group(2)))
    if "mariadb" in version.lower():
        return f"MariaDB {version}" if number < MINIMUM_MARIADB else ""
    return f"MySQL {version}" if number < MINIMUM_MYSQL else ""


def _error_code(exc: BaseException) -> int | None:
    """The server's (or PyMySQL's) numeric error code of a driver error, if any."""
    source: Any = getattr(exc, "orig", None) or exc
    args = getattr(source, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _read_catalog_once(connection: Connection) -> Catalog:
    """The base tables, then the rows of flowdb's progress and version tables among them."""
    import sqlalchemy as sa

    tables = frozenset(
        connection.execute(
            sa.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                "DATABASE() AND table_type IN ('BASE TABLE', 'SYSTEM VERSIONED')"
            )
        ).scalars()
    )
    return Catalog.read_rows(connection, tables)


def _holder(connection: Connection, name: str) -> LockHolder | None:
    """Who holds lock ``name``: its connection in the process list.

    The server shows its connection id, its client's ``host:port`` and ``time``, the
    seconds since its last statement. It is named as a flowdb command only when its
    connection says so: flowdb's lock connection sends ``program_name`` (with its command,
    pid and host), which the server shows where ``performance_schema`` is on.
    """
    import datetime as dt

    import sqlalchemy as sa

    from flowdb.database.locking import LockHolder, now_text

    row = connection.execute(
        sa.text(
            "SELECT p.id, p.host, p.time FROM information_schema.processlist p "
            "WHERE p.id = IS_USED_LOCK(:name)"
        ),
        {"name": name},
    ).first()
    if row is None:
        return None
    connection_id, client, seconds = row
    since = now_text(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(seconds or 0)))
    program = _program_name(connection, int(connection_id))
    words = program.split()
    if words[:1] == [_PROGRAM_PREFIX] and len(words) > 1:
        fields = dict(word.split("=", 1) for word in words[2:] if "=" in word)
        if fields.get("pid", "").isdigit():
            return LockHolder(
                command=words[1],
                pid=int(fields["pid"]),
                host=fields.get("host", str(client or "?")),
                since=since,
                connection=int(connection_id),
            )
    return LockHolder.server_connection(int(connection_id), str(client or "?"), since)


def _program_name(connection: Connection, connection_id: int) -> str:
    """The ``program_name`` connection attribute of ``connection_id``; "" where not shown."""
    import sqlalchemy as sa

    try:
        value = connection.execute(
            sa.text(
                "SELECT attr_value FROM performance_schema.session_connect_attrs "
                "WHERE processlist_id = :id AND attr_name = 'program_name'"
            ),
            {"id": connection_id},
        ).scalar()
    except sa.exc.DBAPIError:  # no performance_schema, or no right to read it
        return ""
    return str(value or "")

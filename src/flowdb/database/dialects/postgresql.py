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

import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from flowdb.database.dialects.base import (
    Catalog,
    Dialect,
    dump_command_line,
    first_line,
    validate_server_url,
)
from flowdb.errors import (
    ConfigurationError,
    DatabaseBusyError,
    DatabaseReadOnlyError,
    DatabaseUnreachableError,
    DiskFullError,
    FlowdbError,
    MigrationFailedError,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from flowdb.database.locking import LockHolder, Waiter
    from flowdb.database.urls import DatabaseUrl
    from flowdb.settings import Settings

#: What the API server's sessions are called: releases before the replicas' heartbeat
#: used ``flowdb-server``, which ``database.fleet`` counts as older replicas.
SERVER_APPLICATION_NAME = "flowdb-server+heartbeat"
#: The advisory lock key: ASCII "flow", below 2**31 so pg_locks shows it in ``objid``.
ADVISORY_LOCK_KEY = 0x666C6F77
#: The fence key (ASCII "fenc"): held by each migration transaction of the lock's holder.
FENCE_KEY = 0x66656E63
#: Whether this session holds the advisory key ``:key`` (granted, in this database).
_HOLDS_KEY = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND pid = pg_backend_pid() AND classid = :classid AND objid = :objid AND objsubid = 1)"
)
#: One line for a session lock that does not hold: a transaction pooler in between.
_POOLED_HINT = (
    "The migration lock does not hold on %s: its server session changes between "
    "statements, so a pooler in transaction mode (such as PgBouncer) is in between; set "
    "FLOWDB_DATABASE_POOL_MODE=transaction for this URL (nothing was changed)."
)
_RELEASE_HINT = (
    "The migration lock on %s was not held by the session that released it: a pooler in "
    "transaction mode is in between, and concurrent migrations were not kept apart; set "
    "FLOWDB_DATABASE_POOL_MODE=transaction for this URL."
)
logger = logging.getLogger("flowdb.migrations.lock")
CONNECT_TIMEOUT_SECONDS = 10
_APPLICATION_PREFIX = "flowdb-lock"
#: How long one read of the catalog waits for a table lock before asking who holds it.
_READ_LOCK_TIMEOUT_MS = 500
#: SQLSTATE of a relation that does not exist (``undefined_table``).
_UNDEFINED_TABLE = "42P01"
_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
#: URL parameters asyncpg understands as they are.
_ASYNCPG_NATIVE = {"ssl", "timeout", "command_timeout", "statement_cache_size"}
#: URL parameters only one driver knows, and what the other driver calls them.
_LIBPQ_FOR_ASYNCPG_PARAMETER = {"ssl": "sslmode", "timeout": "connect_timeout"}
#: libpq's connection parameters and asyncpg's names for them.
_LIBPQ_CONNECTION = {
    "host": "host",
    "port": "port",
    "user": "user",
    "password": "password",
    "dbname": "database",
}
_DROPPED_FOR_PSYCOPG = {"command_timeout", "statement_cache_size", "prepared_statement_cache_size"}


class PostgresDialect(Dialect):
    """PostgreSQL 12 or newer."""

    name: ClassVar[str] = "postgresql"
    label: ClassVar[str] = "PostgreSQL"
    drivers: ClassVar[frozenset[str]] = frozenset({"", "psycopg", "psycopg2", "asyncpg", "pg8000"})
    sync_driver: ClassVar[str] = "postgresql+psycopg"
    async_driver: ClassVar[str] = "postgresql+asyncpg"
    native_enums: ClassVar[bool] = True
    #: Whether this command's migration connection holds the fence as a session lock.
    _session_fence: bool = False
    #: The lock's and the fence's keys while the lock is held (per schema).
    _lock_key: int = ADVISORY_LOCK_KEY
    _fence_key: int = FENCE_KEY
    concurrent_indexes: ClassVar[bool] = True
    deferred_validation: ClassVar[bool] = True

    @classmethod
    def validate_url(cls, url: DatabaseUrl, shown: str) -> None:
        """A database name is required; a bare ``@`` in the password is refused."""
        validate_server_url(url, shown, "postgresql+psycopg://user@host:5432/flowdb")
        _psycopg_query(url, shown)
        _asyncpg_connect_args(url, shown, build_ssl=False)

    def __init__(self, url: DatabaseUrl, settings: Settings) -> None:
        super().__init__(url, settings)
        self._pooled: bool | None = None

    @property
    def transaction_pooling(self) -> bool:
        """Whether connections go through a pooler in transaction mode (no session state).

        ``FLOWDB_DATABASE_POOL_MODE`` forces the answer; ``auto`` (the default) asks the
        server once for this ``Database`` (``detect_transaction_pooler``).
        """
        mode = self.settings.database_pool_mode
        if mode != "auto":
            return mode == "transaction"
        if self._pooled is None:
            self._pooled = detect_transaction_pooler(self._url_without_options())
            if self._pooled:
                logger.debug(
                    "%s is reached through a pooler in transaction mode: the migration lock "
                    "is held in a transaction, settings are set per transaction",
                    self.url.redacted(),
                )
        return self._pooled

    def _url_without_options(self) -> Any:
        """``sync_url`` without libpq's ``options``: startup options travel separately."""
        query = {k: v for k, v in self.sync_url.query.items() if k != "options"}
        return self.sync_url.set(query=query)

    def url_settings(self) -> dict[str, str]:
        """The server settings the URL's ``options`` parameter asks for (``-c name=value``)."""
        options = self.url.url.query.get("options")
        if not options:
            return {}
        text = options if isinstance(options, str) else " ".join(options)
        return _options_settings(text, self.url.redacted())

    # --- engines ------------------------------------------------------------------------

    @property
    def sync_url(self) -> Any:
        """psycopg, with asyncpg-only URL parameters translated to libpq's."""
        return self.url.url.set(
            drivername=self.sync_driver, query=_psycopg_query(self.url, self.url.redacted())
        )

    @property
    def async_url(self) -> Any:
        """asyncpg, without URL parameters: they travel as connect arguments."""
        return self.url.url.set(drivername=self.async_driver, query={})

    def create_sync_engine(
        self, application_name: str, *, statement_timeout: float | None = None
    ) -> Engine:
        """psycopg, unpooled, with a connect timeout and the migrations' statement timeout.

        ``statement_timeout`` (seconds, 0: none) replaces the migrations' own, for
        reads that are not migrations.
        """
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        # A cancelled index build or data migration only wastes the work done so far,
        # since each migration rolls back as a whole.
        seconds = (
            self.settings.migration_statement_timeout
            if statement_timeout is None
            else statement_timeout
        )
        timeout_ms = round(seconds * 1000)
        # Every statement waits at most this long for a lock (a waiting ACCESS EXCLUSIVE
        # request would queue every later query on its table); the runner retries.
        lock_ms = round(self.settings.migration_ddl_lock_timeout * 1000)
        own = {"statement_timeout": str(timeout_ms), "lock_timeout": str(lock_ms)}
        # The URL's settings (a search_path) and flowdb's, flowdb's last so that they win.
        settings = {**self.url_settings(), **own}
        connect_args: dict[str, Any] = {"application_name": application_name[:63]}
        if self.transaction_pooling:
            # Server-side prepared statements belong to one server connection.
            connect_args["prepare_threshold"] = None
        else:
            connect_args["options"] = _options_text(settings)
        if "connect_timeout" not in self.sync_url.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        engine = create_engine(
            self._url_without_options(), poolclass=NullPool, connect_args=connect_args
        )
        if self.transaction_pooling:
            _set_local_on_begin(engine, settings)
        return engine

    def create_async_engine(self, *, write: bool) -> AsyncEngine:
        """asyncpg with the API's statement timeout; one engine serves reads and writes."""
        from sqlalchemy.ext.asyncio import create_async_engine

        connect_args = _asyncpg_connect_args(self.url, self.url.redacted())
        timeout_ms = round(self.settings.server_query_timeout * 1000)
        server_settings = {
            "application_name": SERVER_APPLICATION_NAME,
            "statement_timeout": str(timeout_ms),
            **connect_args.pop("server_settings", {}),
        }
        local_settings = {k: v for k, v in server_settings.items() if k != "application_name"}
        if self.transaction_pooling:
            # PgBouncer forwards application_name only; statements are never cached on
            # a server connection another client may get next.
            server_settings = {"application_name": server_settings["application_name"]}
            connect_args.update(
                statement_cache_size=0,
                prepared_statement_cache_size=0,
                prepared_statement_name_func=_unique_statement_name,
            )
        engine = create_async_engine(
            self.async_url,
            pool_pre_ping=True,
            connect_args={**connect_args, "server_settings": server_settings},
            json_serializer=dumps_keeping_floats,
        )
        if self.transaction_pooling:
            _set_local_on_begin(engine.sync_engine, local_settings)
        return engine

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
                        return _read_catalog_once(connection)
                    except OperationalError as exc:
                        if "lock timeout" not in str(exc.orig):
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
        return (
            super().table_vanished(exc)
            or getattr(source, "sqlstate", None) == _UNDEFINED_TABLE
            or "could not open relation with OID" in str(source)
        )

    # --- the migration lock ---------------------------------------------------------------

    @contextmanager
    def migration_lock(self, command: str, waiter: Waiter) -> Iterator[None]:
        """A session advisory lock on its own autocommit connection, polled until the timeout.

        Behind a transaction pooler: the transaction-level lock of the same key, in a
        transaction held open for the block (``_transaction_lock``).
        """

        from flowdb.database.locking import POLL_SECONDS, me

        holder = me(command)
        engine = self.create_sync_engine(
            f"{_APPLICATION_PREFIX} {command} pid={holder.pid} host={holder.host}"
        )
        if self.transaction_pooling:
            try:
                with (
                    _transaction_lock(engine, waiter) as connection,
                    self._holding(connection, waiter),
                ):
                    yield
            finally:
                engine.dispose()
            return
        try:
            with engine.connect() as raw_connection:
                connection = raw_connection.execution_options(isolation_level="AUTOCOMMIT")
                key = lock_key(connection)
                while not self._try_session_lock(connection, key):
                    waiter.still_waiting(_holder(connection, key))
                    time.sleep(min(POLL_SECONDS, waiter.remaining()))
                try:
                    with self._holding(connection, waiter):
                        yield
                finally:
                    self._release(connection, key)
        finally:
            engine.dispose()

    @contextmanager
    def _holding(self, connection: Connection, waiter: Waiter) -> Iterator[None]:
        """The block under a lock just taken: fenced, after any step of a lost holder ended.

        The lock and its fence are per schema (``lock_key``, ``fence_key``), as tenants
        in one database migrate independently.
        """
        self._lock_key = lock_key(connection)
        self._fence_key = fence_key(self._lock_key)
        _wait_for_fence(connection, waiter, self._fence_key)
        self._settle(connection)
        self.lock_session = connection
        try:
            yield
        finally:
            self.lock_session = None

    def _release(self, connection: Connection, key: int) -> None:
        """Unlock; a session that has ended already lost the lock with it, which is no error.

        The command's work was fenced by the lock until its last step, so a finished
        command whose lock session ended afterwards still finished (it is not exit 3).
        """
        import sqlalchemy as sa

        try:
            released = connection.execute(
                sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key}
            ).scalar()
        except sa.exc.SQLAlchemyError as exc:
            logger.warning(
                "The migration lock's session on %s had ended before the lock was released "
                "(%s); the server released the lock with it.",
                self.url.redacted(),
                first_line(exc),
            )
            return
        if not released:
            logger.warning(_RELEASE_HINT, self.url.redacted())

    def take_fence(self, dbapi_connection: Any) -> None:
        """The fence key as a transaction lock; as a session lock outside a transaction.

        Found held by another session, the lock is checked first (a command that lost
        it stops instead of waiting). A concurrent index build runs in autocommit, where
        a transaction lock would end with its statement: the session lock taken then is
        given back as the next transaction begins (holding the transaction lock by
        then). Behind a transaction pooler a session lock would stay on a pooled
        connection: there only transactions are fenced.
        """
        cursor = dbapi_connection.cursor()
        try:
            in_session = getattr(dbapi_connection, "autocommit", False)
            if in_session and self.transaction_pooling:
                return
            kind = "" if in_session else "xact_"
            cursor.execute(f"SELECT pg_try_advisory_{kind}lock(%s)", (self._fence_key,))
            if not cursor.fetchone()[0]:
                # Held by the new holder if this command lost the lock: stop now rather
                # than queue behind its steps; else a lost holder's step is ending.
                self.check_lock(dbapi_connection)
                cursor.execute(f"SELECT pg_advisory_{kind}lock(%s)", (self._fence_key,))
            if in_session:
                self._session_fence = True
                return
            if self._session_fence:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (self._fence_key,))
                self._session_fence = False
        finally:
            cursor.close()

    def lock_still_held(self) -> bool:
        """The lock session answers, and holds flowdb's advisory lock (either mode)."""
        import sqlalchemy as sa

        if self.lock_session is None:
            return False
        try:
            held = self.lock_session.execute(
                sa.text(_HOLDS_KEY), _key_halves(self._lock_key)
            ).scalar()
        except sa.exc.SQLAlchemyError:
            return False
        self._settle(self.lock_session)
        return bool(held)

    def _settle(self, connection: Connection) -> None:
        """Behind a transaction pooler: end the lock's open transaction on a utility statement.

        As ``_transaction_lock`` does after taking the lock: a query's portal left last
        could hold a snapshot, which concurrent index builds would wait for.
        """
        import sqlalchemy as sa

        if self.transaction_pooling:
            connection.execute(sa.text("SET LOCAL idle_in_transaction_session_timeout = 0"))

    def _try_session_lock(self, connection: Connection, key: int) -> bool:
        """``pg_try_advisory_lock``, refusing a server session that holds the lock already.

        A new session never does, directly or behind a session pooler (which resets
        each session it hands over). Behind a transaction pooler it can: another
        client's lock stays on the pooled session it was taken on, and taking it again
        there would succeed (the lock is re-entrant). One statement, so both halves run
        on the same server session.
        """
        import sqlalchemy as sa

        query = sa.text(
            "WITH before AS MATERIALIZED (SELECT EXISTS (SELECT 1 FROM pg_locks "
            "WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND classid = :classid "
            "AND objid = :objid AND objsubid = 1) AS held) "
            "SELECT held, pg_try_advisory_lock(:key) FROM before"
        )
        held, taken = connection.execute(query, {"key": key, **_key_halves(key)}).one()
        if held:
            if taken:  # undo the re-entrant count this call added
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            raise ConfigurationError(_POOLED_HINT % self.url.redacted())
        return bool(taken)

    def migration_running(self) -> LockHolder | None:
        """The session holding flowdb's advisory lock in this database, from ``pg_locks``."""
        engine = self.create_sync_engine("flowdb-status", statement_timeout=0)
        try:
            with engine.connect() as connection:
                return _holder(connection)
        finally:
            engine.dispose()

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

    # --- errors -----------------------------------------------------------------------------

    def translate_error(self, exc: BaseException, text: str) -> FlowdbError | None:
        """Connection failures, permissions, timeouts and a full disk, each in one line."""
        lowered = text.lower()
        where = self.url.redacted()
        connection_markers = (
            "connection refused",
            "could not connect",
            "connection failed",
            "could not translate host name",
            "name or service not known",
            "timeout expired",
            "connection timed out",
            "no route to host",
            "password authentication failed",
            "no password supplied",
            "server closed the connection",
            "connection is lost",
            "terminating connection",
        )
        if "unsupported startup parameter" in lowered:
            return ConfigurationError(
                f"A pooler in front of {where} refused a startup parameter ({text}); behind "
                "PgBouncer in transaction pooling set FLOWDB_DATABASE_POOL_MODE=transaction "
                "(or auto, which detects it); in session pooling, add the parameter to its "
                "ignore_startup_parameters."
            )
        missing_database = 'database "' in lowered and "does not exist" in lowered
        if missing_database or any(marker in lowered for marker in connection_markers):
            return DatabaseUnreachableError(
                f"Cannot connect to the database at {where} ({text}); check that the server is "
                "running and that FLOWDB_DATABASE_URL names the right host, port, user and "
                "database."
            )
        if "invalid connection option" in lowered or "invalid sslmode" in lowered:
            return ConfigurationError(
                f"The database URL {where} has a parameter PostgreSQL does not know ({text}); "
                "remove it from FLOWDB_DATABASE_URL."
            )
        if "statement timeout" in lowered:
            return MigrationFailedError(
                f"A statement on {where} ran longer than FLOWDB_MIGRATION_STATEMENT_TIMEOUT "
                "allows and was cancelled; the migration it belonged to was rolled back. Raise "
                "the timeout (0 means no limit) and run the command again."
            )
        if "lock timeout" in lowered:
            return DatabaseBusyError(
                f"A table of {where} stayed locked by another session ({text}); the step was "
                "rolled back. Find the session in pg_stat_activity, let it finish, and run the "
                "command again."
            )
        if "no schema has been selected to create in" in lowered:
            return ConfigurationError(
                f"No schema of the search_path of {where} exists ({text}); create the schema "
                "(CREATE SCHEMA ...) or fix the options parameter of FLOWDB_DATABASE_URL."
            )
        if "read-only transaction" in lowered:
            return DatabaseReadOnlyError(
                f"The database at {where} is read-only ({text}); connect to the primary server."
            )
        if "permission denied" in lowered or "must be owner" in lowered:
            return DatabaseReadOnlyError(
                f"The database user may not do this on {where} ({text}); connect as a user "
                "that may read, create and alter flowdb's tables."
            )
        if "no space left" in lowered or "could not extend file" in lowered:
            return DiskFullError(
                f"The PostgreSQL server of {where} ran out of disk space ({text}); the step "
                "was rolled back. Free space on the server and run the command again."
            )
        return None

    def server_timeout_message(self, exc: BaseException, text: str) -> str | None:
        """A ``statement_timeout`` on the API's engine: FLOWDB_SERVER_QUERY_TIMEOUT ran out."""
        if "statement timeout" not in text.lower():
            return None
        return (
            f"The query ran longer than FLOWDB_SERVER_QUERY_TIMEOUT "
            f"({self.settings.server_query_timeout:g} s) allows and was cancelled; try again, "
            "or raise that setting (0 means no limit)."
        )

    def is_lock_timeout(self, exc: BaseException) -> bool:
        """SQLSTATE 55P03 (lock_not_available): ``lock_timeout`` ran out."""
        return getattr(getattr(exc, "orig", None), "sqlstate", None) == "55P03"

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

        from flowdb.database.dialects import postgresql_catalogue

        engine = self.create_sync_engine("flowdb-snapshot", statement_timeout=0)
        try:
            with engine.connect() as connection:
                schema = str(connection.execute(sa.text("SELECT current_schema()")).scalar())
        finally:
            engine.dispose()
        return postgresql_catalogue.dump(self.sync_url, schema, exclude)

    def catalogue(self, skip_rows: frozenset[str]) -> dict[str, Any]:
        """Tables, constraints, indexes, enum types, sequences and rows from ``pg_catalog``."""
        from flowdb.database.dialects import postgresql_catalogue

        engine = self.create_sync_engine("flowdb-catalogue", statement_timeout=0)
        try:
            with engine.connect() as connection:
                return postgresql_catalogue.catalogue(connection, skip_rows)
        finally:
            engine.dispose()


def dumps_keeping_floats(document: Any) -> str:
    """JSON text for a JSONB column from which each float comes back as the same float.

    JSONB stores numbers as ``numeric`` and prints them without exponents: a float
    written as ``1e+308`` comes back as a 1 followed by 308 zeros, which reads as an
    integer. Written positionally with a decimal point (``1000...0.0``), it comes back
    as that text, which reads as the same float.
    """
    import json
    from decimal import Decimal

    floats: list[str] = []
    marker = uuid.uuid4().hex

    def mark(item: Any) -> Any:
        if isinstance(item, float):
            text = format(Decimal(repr(item)), "f")
            floats.append(text if "." in text else f"{text}.0")
            return f"{marker}{len(floats) - 1}"
        if isinstance(item, dict):
            return {key: mark(value) for key, value in item.items()}
        if isinstance(item, list):
            return [mark(value) for value in item]
        return item

    text = json.dumps(mark(document))
    if not floats:
        return text
    return re.sub(f'"{marker}(\\d+)"', lambda m: floats[int(m[1])], text)


@contextmanager
def _transaction_lock(engine: Engine, waiter: Waiter) -> Iterator[Connection]:
    """Hold flowdb's advisory lock as a transaction lock, in a transaction kept open.

    A pooler in transaction mode gives the open transaction one server connection until
    it ends, so the lock holds there for the whole block, and is released when the
    transaction ends: at the end of the block, or when the holder's client connection
    (and with it the server connection) goes away. Each failed try is rolled back, so a
    waiter does not keep a server connection of the pool between tries.
    """
    import sqlalchemy as sa

    from flowdb.database.locking import POLL_SECONDS

    try_lock = sa.text("SELECT pg_try_advisory_xact_lock(:key)")
    with engine.connect() as connection:
        key = lock_key(connection)
        while True:
            if connection.execute(try_lock, {"key": key}).scalar():
                # Last, so that the open portal is a utility statement's, holding no
                # snapshot (else concurrent index builds would wait for this transaction);
                # and the transaction stays idle between the migrations' statements.
                connection.execute(sa.text("SET LOCAL idle_in_transaction_session_timeout = 0"))
                break
            holder = _holder(connection, key)
            connection.rollback()
            waiter.still_waiting(holder)
            time.sleep(min(POLL_SECONDS, waiter.remaining()))
        try:
            yield connection
        finally:
            connection.rollback()


def _wait_for_fence(connection: Connection, waiter: Waiter, key: int) -> None:
    """Wait until no session holds the fence: a step of a holder that lost the lock ended.

    A holder whose lock session died may still be inside a step on its migration
    connection; that step holds the fence until it commits or rolls back, and the
    holder's next transaction finds the lock gone. Only then is the database read.
    """
    import sqlalchemy as sa

    from flowdb.database.locking import POLL_SECONDS

    query = sa.text(
        "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.classid = :classid AND l.objid = :objid AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.pid <> pg_backend_pid()"
    )
    while (pid := connection.execute(query, _key_halves(key)).scalar()) is not None:
        waiter.still_waiting(
            None,
            other=f"a migration step still running in server session {pid} for a command "
            "that lost the lock",
        )
        time.sleep(min(POLL_SECONDS, max(waiter.remaining(), 0.01)))


def _set_local_on_begin(engine: Engine, settings: dict[str, str]) -> None:
    """Apply ``settings`` locally (``set_config(..., true)``) as each transaction begins.

    Behind a transaction pooler a session ``SET`` (or a startup option) would stay on a
    server connection that other clients get next; a local setting ends with the
    transaction. ``set_config`` takes each value as text, as a startup option does (a
    list such as ``search_path=a,b`` included).
    """
    from sqlalchemy import event

    if not settings:
        return
    statement = "SELECT " + ", ".join(
        f"set_config({_quoted(name)}, {_quoted(value)}, true)" for name, value in settings.items()
    )

    @event.listens_for(engine, "begin")
    def _set_local(connection: Connection) -> None:
        dbapi_connection = connection.connection.dbapi_connection
        if dbapi_connection is None or getattr(dbapi_connection, "autocommit", False):
            return  # an autocommit block: no transaction to hold SET LOCAL
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()


def _unique_statement_name() -> str:
    """A prepared statement name no other client of a pooled server connection uses."""
    import uuid

    return f"__flowdb_{uuid.uuid4().hex}__"


def _read_catalog_once(connection: Connection) -> Catalog:
    import sqlalchemy as sa

    tables = frozenset(
        connection.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        ).scalars()
    )
    return Catalog.read_rows(connection, tables)


def _holder(connection: Connection, key: int | None = None) -> LockHolder | None:
    """The session holding flowdb's advisory lock (``key``: of the current schema), if any."""
    import sqlalchemy as sa

    from flowdb.database.locking import LockHolder, now_text

    key = lock_key(connection) if key is None else key
    row = connection.execute(
        sa.text(
            "SELECT a.application_name, a.pid, a.client_addr, a.backend_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :classid "
            "AND l.objid = :objid AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        _key_halves(key),
    ).first()
    if row is None:
        return None
    name, backend_pid, client_addr, started = row
    words = str(name).split()
    fields = dict(part.split("=", 1) for part in words if "=" in part)
    command = words[1] if len(words) > 1 and words[0] == _APPLICATION_PREFIX else "command"
    since = now_text(started) if isinstance(started, dt.datetime) else "?"
    return LockHolder(
        command=command,
        pid=int(fields.get("pid", backend_pid)),
        host=fields.get("host", str(client_addr or "local socket")),
        since=since,
    )


def lock_key(connection: Connection) -> int:
    """The advisory lock key of the connection's current schema.

    ``public`` (or no schema) keeps flowdb's historic key, so that older flowdb
    versions and this one exclude each other there; another schema puts a hash of its
    name in the key's high half, so that each tenant schema of one database has a lock
    of its own.
    """
    import zlib

    import sqlalchemy as sa

    schema = connection.execute(sa.text("SELECT current_schema()")).scalar()
    if schema is None or schema == "public":
        return ADVISORY_LOCK_KEY
    high = zlib.crc32(str(schema).encode("utf-8")) & 0x7FFFFFFF or 1
    return (high << 32) | ADVISORY_LOCK_KEY


def fence_key(key: int) -> int:
    """The fence's key for the lock ``key``: the same schema half, the fence's own low half."""
    return (key & ~0xFFFFFFFF) | FENCE_KEY


def _key_halves(key: int) -> dict[str, int]:
    """How ``pg_locks`` shows a bigint advisory key: ``classid`` high, ``objid`` low."""
    return {"classid": key >> 32, "objid": key & 0xFFFFFFFF}


def detect_transaction_pooler(url: Any) -> bool:
    """Whether a pooler in transaction mode stands between flowdb and the server at ``url``.

    Two client connections: the first asks for its server session (``pg_backend_pid``),
    the second opens a transaction and asks, then the first asks again while that
    transaction is open. Reached directly or through a session pooler, each client keeps
    its own server session: the two differ and the first's never changes. A transaction
    pooler hands the session the first just released to the second (the same pid), or
    moves the first to another session (its pid changes). No startup options are sent
    (PgBouncer refuses them). A failure answers ``False``: the real connection reports it.
    """
    import psycopg

    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    options: dict[str, Any] = {
        "autocommit": True,
        "prepare_threshold": None,
        "application_name": "flowdb-probe",
    }
    if "connect_timeout" not in url.query:
        options["connect_timeout"] = CONNECT_TIMEOUT_SECONDS

    def pid(connection: psycopg.Connection[Any]) -> Any:
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
        return row[0] if row else None

    try:
        with (
            psycopg.connect(conninfo, **options) as first,
            psycopg.connect(conninfo, **options) as second,
        ):
            for _ in range(2):
                before = pid(first)
                with second.transaction():
                    if pid(second) == before or pid(first) != before:
                        return True
    except psycopg.Error as exc:
        logger.debug("Could not look for a transaction pooler: %s", exc)
    return False


def _quoted(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _options_text(settings: dict[str, str]) -> str:
    """libpq's ``options`` for ``settings``: ``-c name=value`` each, spaces escaped."""
    backslash = "\\"

    def escaped(value: str) -> str:
        return value.replace(backslash, backslash * 2).replace(" ", backslash + " ")

    return " ".join(f"-c {name}={escaped(value)}" for name, value in settings.items())


def _psycopg_query(url: DatabaseUrl, shown: str) -> dict[str, Any]:
    """The URL's parameters in libpq's terms, for psycopg."""
    query: dict[str, Any] = {}
    for key, value in url.url.query.items():
        if key in _DROPPED_FOR_PSYCOPG:
            continue
        if key == "ssl":
            query["sslmode"] = _ssl_mode(value, shown)
        elif key in _LIBPQ_FOR_ASYNCPG_PARAMETER:
            query[_LIBPQ_FOR_ASYNCPG_PARAMETER[key]] = value
        else:
            query[key] = value
    return query


def _ssl_mode(value: Any, shown: str) -> str:
    text = str(value).lower()
    mode = {"true": "require", "false": "disable", "1": "require", "0": "disable"}.get(text, text)
    if mode not in _SSL_MODES:
        raise ConfigurationError(
            f"Database URL {shown!r} has ssl/sslmode={value!r}; use one of "
            f"{', '.join(sorted(_SSL_MODES))}."
        )
    return mode


def _asyncpg_connect_args(url: DatabaseUrl, shown: str, build_ssl: bool = True) -> dict[str, Any]:
    """The URL's parameters as asyncpg ``connect()`` arguments (libpq names translated).

    ``build_ssl=False`` only validates: certificate files are read when the server
    connects, not when a CLI command parses the URL.
    """
    query: dict[str, Any] = dict(url.url.query)
    args: dict[str, Any] = {}
    server_settings: dict[str, str] = {}
    ssl_files: dict[str, Any] = {
        key: query.pop(key) for key in ("sslrootcert", "sslcert", "sslkey") if key in query
    }
    mode = query.pop("sslmode", None) or query.pop("ssl", None)
    if mode is not None or ssl_files:
        checked = _ssl_mode(mode or "prefer", shown)
        args["ssl"] = _ssl_context(checked, ssl_files) if build_ssl else checked
    for key, value in query.items():
        text = str(value)
        if key in ("connect_timeout", "timeout", "command_timeout"):
            try:
                seconds = float(text)
            except ValueError:
                raise ConfigurationError(
                    f"Database URL {shown!r} has {key}={text!r}; give a number of seconds."
                ) from None
            args["command_timeout" if key == "command_timeout" else "timeout"] = seconds
        elif key in ("statement_cache_size", "prepared_statement_cache_size"):
            args["statement_cache_size"] = int(text) if text.isdigit() else 0
        elif key == "application_name":
            server_settings["application_name"] = text
        elif key == "options":
            server_settings.update(_options_settings(text, shown))
        elif key == "target_session_attrs":
            args["target_session_attrs"] = text
        elif key in _LIBPQ_CONNECTION:
            args[_LIBPQ_CONNECTION[key]] = int(text) if key == "port" and text.isdigit() else text
        elif key in _ASYNCPG_NATIVE:
            args[key] = value
        else:
            raise ConfigurationError(
                f"Database URL {shown!r} has the parameter {key!r}, which the API server's "
                "PostgreSQL driver cannot use; remove it from FLOWDB_DATABASE_URL (supported: "
                "host, port, user, password, dbname, sslmode, sslrootcert, sslcert, sslkey, "
                "connect_timeout, application_name, options, target_session_attrs)."
            )
    if server_settings:
        args["server_settings"] = server_settings
    return args


def _ssl_context(mode: str, files: dict[str, Any]) -> Any:
    """asyncpg's ``ssl`` argument: the mode name, or a context when certificates are given."""
    if not files:
        return mode
    import ssl

    if mode in ("disable", "allow", "prefer", "require") and "sslrootcert" not in files:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=files.get("sslrootcert"))
        context.check_hostname = mode == "verify-full"
    if "sslcert" in files:
        context.load_cert_chain(files["sslcert"], files.get("sslkey"))
    return context


def _options_settings(options: str, shown: str) -> dict[str, str]:
    """libpq's ``options`` (``-c name=value ...``) as server settings."""
    words = options.split()
    settings: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-c" and index + 1 < len(words):
            pair, index = words[index + 1], index + 2
        elif word.startswith("-c") or word.startswith("--"):
            pair, index = word[2:], index + 1
        else:
            raise ConfigurationError(
                f"Database URL {shown!r} has options={options!r}; only '-c name=value' "
                "settings are supported there."
            )
        name, sep, value = pair.partition("=")
        if not sep:
            raise ConfigurationError(
                f"Database URL {shown!r} has options={options!r}; write each as -c name=value."
            )
        settings[name.replace("-", "_")] = value
    return settings

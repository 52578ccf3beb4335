"""Connecting to PostgreSQL: the sync and async engines, pooler detection, JSON floats.

Migrations run on psycopg 3 with a connect timeout and the migrations' own timeouts as
startup options; the API server on asyncpg with its query timeout. Behind a pooler in
transaction mode (``detect_transaction_pooler``, or ``FLOWDB_DATABASE_POOL_MODE``)
settings are set per transaction instead, and no statement is prepared on a server
connection that another client may get next.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from flowdb.database.dialects.base import Dialect, validate_server_url
from flowdb.database.dialects.postgresql.parameters import (
    _asyncpg_connect_args,
    _options_settings,
    _options_text,
    _psycopg_query,
    _quoted,
)
from flowdb.database.urls import DatabaseUrl

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from flowdb.settings import Settings

logger = logging.getLogger("flowdb.migrations.lock")
CONNECT_TIMEOUT_SECONDS = 10
#: What the API server's sessions are called: releases before the replicas' heartbeat
#: used ``flowdb-server``, which ``database.fleet`` counts as older replicas.
SERVER_APPLICATION_NAME = "flowdb-server+heartbeat"


class PostgresConnecting(Dialect):
    """PostgreSQL's identity, URLs and engines (the first layer of ``PostgresDialect``)."""

    name: ClassVar[str] = "postgresql"
    label: ClassVar[str] = "PostgreSQL"
    drivers: ClassVar[frozenset[str]] = frozenset({"", "psycopg", "psycopg2", "asyncpg", "pg8000"})
    sync_driver: ClassVar[str] = "postgresql+psycopg"
    async_driver: ClassVar[str] = "postgresql+asyncpg"

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
        # No HSTORE in the schema: without native hstore, SQLAlchemy's first connect on a
        # new engine does not look the type up (0.6 ms of the server's CPU per engine).
        engine = create_engine(
            self._url_without_options(),
            poolclass=NullPool,
            connect_args=connect_args,
            use_native_hstore=False,
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


#: Rounds of the session test when something stands between client and server. A transaction
#: pooler is caught in a round unless, under load, other clients keep the probe's server
#: sessions busy in exactly the wrong order; every round is a fresh chance (~1 ms each).
_POOLER_PROBE_ROUNDS = 24


def detect_transaction_pooler(url: Any) -> bool:
    """Whether a pooler in transaction mode stands between flowdb and the server at ``url``.

    First, is anything in between at all: over TCP the server reports the client port
    of its session (``inet_client_port``); when that is this socket's own port, the
    connection is direct and the answer is ``False`` without further ado. Otherwise (a
    pooler, a proxy, NAT or a Unix socket) two client connections test the sessions:
    the first asks for its server session (``pg_backend_pid``), the second opens a
    transaction and asks, then the first asks again while that transaction is open.
    Through a session pooler each client keeps its own server session: the two differ
    and the first's never changes. A transaction pooler hands the session the first
    just released to the second (the same pid), or moves the first to another session
    (its pid changes). Busy poolers can hide that in one round, so it is tried
    ``_POOLER_PROBE_ROUNDS`` times. No startup options are sent (PgBouncer refuses
    them). A failure answers ``False``: the real connection reports it.
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

    try:
        with psycopg.connect(conninfo, **options) as first:
            if _reaches_server_directly(first):
                return False  # the usual case: one connection, not two
            with psycopg.connect(conninfo, **options) as second:
                return _sessions_move(first, second)
    except psycopg.Error as exc:
        logger.debug("Could not look for a transaction pooler: %s", exc)
    return False


def _sessions_move(first: Any, second: Any) -> bool:
    """Whether two client connections show a transaction pooler's moving server sessions."""
    for _ in range(_POOLER_PROBE_ROUNDS):
        before = _backend_pid(first)
        with second.transaction():
            if _backend_pid(second) == before or _backend_pid(first) != before:
                return True
    return False


def _backend_pid(connection: Any) -> Any:
    """The server session (process id) a psycopg connection is on right now."""
    row = connection.execute("SELECT pg_backend_pid()").fetchone()
    return row[0] if row else None


def _reaches_server_directly(connection: Any) -> bool:
    """Whether the server's session sees this client's own TCP port (nothing in between).

    ``False`` when it cannot tell (a Unix socket, an address family without ports).
    """
    import socket

    row = connection.execute("SELECT inet_client_port()").fetchone()
    server_sees = row[0] if row else None
    if server_sees is None:
        return False
    try:
        own = socket.socket(fileno=os.dup(connection.pgconn.socket))
    except OSError:
        return False
    try:
        address = own.getsockname()
    except OSError:
        return False
    finally:
        own.close()  # a duplicate descriptor: the connection keeps its own
    return isinstance(address, tuple) and len(address) >= 2 and address[1] == server_sees

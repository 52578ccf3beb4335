"""PostgreSQL's migration lock and its fence: advisory locks, per schema.

A session advisory lock on a fixed key, held on a dedicated autocommit connection for
the whole command (behind a transaction pooler: the same key as a transaction lock, in
a transaction kept open). The holder's identity travels in that connection's
``application_name``, where waiters read it from ``pg_stat_activity``. The fence (a
second key) is taken by each migration transaction; a new holder waits until no one
holds it before it reads the database (ARCHITECTURE.md, "Fencing").
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flowdb.database.dialects.base import first_line
from flowdb.database.dialects.postgresql.connecting import PostgresConnecting
from flowdb.database.lockinfo import POLL_SECONDS, LockHolder, Waiter, me, now_text
from flowdb.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

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
_APPLICATION_PREFIX = "flowdb-lock"


class PostgresLocking(PostgresConnecting):
    """The migration lock and the fence (the second layer of ``PostgresDialect``)."""

    #: Whether this command's migration connection holds the fence as a session lock.
    _session_fence: bool = False
    #: The lock's and the fence's keys while the lock is held (per schema).
    _lock_key: int = ADVISORY_LOCK_KEY
    _fence_key: int = FENCE_KEY

    @contextmanager
    def migration_lock(self, command: str, waiter: Waiter) -> Iterator[None]:
        """A session advisory lock on its own autocommit connection, polled until the timeout.

        Behind a transaction pooler: the transaction-level lock of the same key, in a
        transaction held open for the block (``_transaction_lock``).
        """

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


def _holder(connection: Connection, key: int | None = None) -> LockHolder | None:
    """The session holding flowdb's advisory lock (``key``: of the current schema), if any."""
    import sqlalchemy as sa

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

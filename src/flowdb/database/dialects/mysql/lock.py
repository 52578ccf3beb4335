"""MySQL's migration lock and its fence: ``GET_LOCK`` names per database.

``GET_LOCK`` on a name derived from the database's name, polled with a zero wait; the
server releases it when the holder's connection ends. Waiters find the holder with
``IS_USED_LOCK`` and name it from the process list. The fence is a second name the
migration connection holds for its whole run (ARCHITECTURE.md, "Fencing").
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flowdb.database.dialects.base import first_line
from flowdb.database.dialects.mysql.connecting import MysqlConnecting
from flowdb.database.lockinfo import POLL_SECONDS, LockHolder, Waiter, me, now_text
from flowdb.errors import MigrationLockTimeoutError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

_LOCK_PREFIX = "flowdb-migrations:"
_FENCE_PREFIX = "flowdb-fence:"
#: The lock connection's ``program_name``: how a waiter knows the holder is flowdb.
_PROGRAM_PREFIX = "flowdb-lock"


class MysqlLocking(MysqlConnecting):
    """The migration lock and the fence (the second layer of ``MysqlDialect``)."""

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
        import sqlalchemy as sa

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


def _holder(connection: Connection, name: str) -> LockHolder | None:
    """Who holds lock ``name``: its connection in the process list.

    The server shows its connection id, its client's ``host:port`` and ``time``, the
    seconds since its last statement. It is named as a flowdb command only when its
    connection says so: flowdb's lock connection sends ``program_name`` (with its command,
    pid and host), which the server shows where ``performance_schema`` is on.
    """
    import sqlalchemy as sa

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

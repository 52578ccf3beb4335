"""The server's async database access: one engine per process, sessions per request.

SQLite is set up for a server: WAL (readers never block the writer), a busy timeout
(writers queue instead of failing), foreign keys on (ON DELETE rules apply). Writes
start with ``BEGIN IMMEDIATE`` so that two writers never both read and then fail to
upgrade their locks; reads use plain deferred transactions and run alongside.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from flowdb.database.urls import DatabaseUrl

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

SQLITE_BUSY_TIMEOUT_MS = 30_000


class ServerDatabase:
    """The engines a server process uses, created on first use and disposed on shutdown."""

    def __init__(self, database: DatabaseUrl) -> None:
        self.database = database
        self._read_engine: AsyncEngine | None = None
        self._write_engine: AsyncEngine | None = None

    def _engine(self, *, write: bool) -> AsyncEngine:
        # Engines connect lazily, so making one costs nothing until it is used.
        if self._write_engine is None:
            self._write_engine = _create_engine(self.database, begin="BEGIN IMMEDIATE")
        if write or not self.database.is_sqlite:
            return self._write_engine  # PostgreSQL: one engine serves reads and writes
        if self._read_engine is None:
            self._read_engine = _create_engine(self.database, begin="BEGIN")
        return self._read_engine

    @asynccontextmanager
    async def session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed when the block ends without error."""
        from sqlalchemy.ext.asyncio import AsyncSession

        engine = self._engine(write=write)
        async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
            yield session

    async def dispose(self) -> None:
        """Close every pooled connection (on shutdown, and after the schema was dropped)."""
        for engine in (self._read_engine, self._write_engine):
            if engine is not None:
                await engine.dispose()
        self._read_engine = self._write_engine = None


def _create_engine(database: DatabaseUrl, *, begin: str) -> AsyncEngine:
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine

    if not database.is_sqlite:
        from flowdb.settings import get_settings

        timeout_ms = round(get_settings().server_query_timeout * 1000)
        settings = {"application_name": "flowdb-server", "statement_timeout": str(timeout_ms)}
        return create_async_engine(
            database.async_url, pool_pre_ping=True, connect_args={"server_settings": settings}
        )
    engine = create_async_engine(database.async_url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _server_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling would defer BEGIN to the first write.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
            "PRAGMA foreign_keys=ON",
            "PRAGMA synchronous=NORMAL",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine

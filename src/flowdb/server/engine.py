"""The server's async database access: one engine per process, sessions per request.

The dialect makes the engines (``Dialect.create_async_engine``): on SQLite a WAL
database with a busy timeout, foreign keys on, and writes that begin IMMEDIATE, plus a
second engine for reads; on PostgreSQL one asyncpg engine with the API's own
statement timeout.

On SQLite every write session also waits for its turn in the process's write queue
(``write_queue.WriteQueue``): one writer at a time, in arrival order, so a write
waits for those ahead of it instead of racing them in SQLite's busy handler.
``FLOWDB_SERVER_WRITE_QUEUE=false`` turns the queue off (the bench's baseline).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from flowdb.server.write_queue import WriteQueue

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from flowdb.database.target import Database


class ServerDatabase:
    """The engines a server process uses, created on first use and disposed on shutdown."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._read_engine: AsyncEngine | None = None
        self._write_engine: AsyncEngine | None = None
        self.write_queue = _write_queue(database)

    def _engine(self, *, write: bool) -> AsyncEngine:
        # Engines connect lazily, so making one costs nothing until it is used.
        dialect = self.database.dialect
        if self._write_engine is None:
            self._write_engine = dialect.create_async_engine(write=True)
        if write or not dialect.features.separate_read_engine:
            return self._write_engine
        if self._read_engine is None:
            self._read_engine = dialect.create_async_engine(write=False)
        return self._read_engine

    @asynccontextmanager
    async def session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed when the block ends without error."""
        from sqlalchemy.ext.asyncio import AsyncSession

        engine = self._engine(write=write)
        queue = self.write_queue if write else None
        # The turn is taken before the connection and held until after the commit.
        turn = queue.turn() if queue is not None else nullcontext()
        async with turn, AsyncSession(engine, expire_on_commit=False) as session, session.begin():
            yield session

    def pools(self) -> list[tuple[str, Any]]:
        """The pools of the engines made so far, named ``write`` and ``read`` (for metrics)."""
        engines = (("write", self._write_engine), ("read", self._read_engine))
        return [(name, engine.pool) for name, engine in engines if engine is not None]

    async def dispose(self) -> None:
        """Close every pooled connection (on shutdown, and after the schema was dropped)."""
        for engine in (self._read_engine, self._write_engine):
            if engine is not None:
                await engine.dispose()
        self._read_engine = self._write_engine = None


def _write_queue(database: Database) -> WriteQueue | None:
    """The queue writes wait in: on a dialect with one writer at a time (SQLite), if on."""
    if not database.dialect.features.single_writer or not database.settings.server_write_queue:
        return None
    from flowdb.database.dialects.sqlite import SERVER_BUSY_TIMEOUT_MS

    return WriteQueue(SERVER_BUSY_TIMEOUT_MS / 1000)

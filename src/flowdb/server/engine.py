"""The server's async database access: one engine per process, sessions per request.

The dialect makes the engines (``Dialect.create_async_engine``): on SQLite a WAL
database with a busy timeout, foreign keys on, and writes that begin IMMEDIATE, plus a
second engine for reads; on PostgreSQL one asyncpg engine with the API's own
statement timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from flowdb.database.target import Database


class ServerDatabase:
    """The engines a server process uses, created on first use and disposed on shutdown."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._read_engine: AsyncEngine | None = None
        self._write_engine: AsyncEngine | None = None

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
        async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
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

"""The server's SQLite connections are set up for a server."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from flowdb.database.dialects.sqlite import SERVER_BUSY_TIMEOUT_MS
from flowdb.database.target import Database
from flowdb.server.engine import ServerDatabase


def test_sqlite_sessions_use_wal_a_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    async def pragmas(write: bool) -> tuple[object, ...]:
        database = ServerDatabase(Database.from_url(sqlite_url))
        try:
            async with database.session(write=write) as session:
                names = ("journal_mode", "busy_timeout", "foreign_keys")
                return tuple([await session.scalar(sa.text(f"PRAGMA {n}")) for n in names])
        finally:
            await database.dispose()

    for write in (False, True):
        assert asyncio.run(pragmas(write)) == ("wal", SERVER_BUSY_TIMEOUT_MS, 1)


def test_sqlite_writes_take_the_write_lock_at_begin(sqlite_url: str) -> None:
    """A write session holds SQLite's write lock from its first statement, so two
    writers queue on the busy timeout instead of failing to upgrade a read lock."""

    async def probe() -> str:
        database = ServerDatabase(Database.from_url(sqlite_url))
        try:
            async with database.session(write=True) as session:
                await session.execute(sa.text("SELECT 1"))
                other = sa.create_engine(sqlite_url, connect_args={"timeout": 0})
                try:
                    with other.connect() as connection:
                        connection.exec_driver_sql("BEGIN IMMEDIATE")
                        return "got the lock"
                except sa.exc.OperationalError as error:
                    return str(error.orig)
                finally:
                    other.dispose()
        finally:
            await database.dispose()

    assert asyncio.run(probe()) == "database is locked"

"""The dialect parts of retention (``flowdb database clean``): the cleaner lock, space back.

Everything else of a clean is portable SQL (``flowdb.database.retention``); these are
the two things each server does its own way:

* **the cleaner lock**, so that two cleaners (two replicas' retention services, or a
  service and a ``clean`` command) never delete at once: PostgreSQL a session advisory
  lock on a key of its own (never the migration lock's, which a clean does not take),
  MariaDB/MySQL a ``GET_LOCK`` name of its own, SQLite a file lock beside the database.
  Taken without waiting: a busy lock means another cleaner works, so this one skips.
* **space back** after a clean: SQLite returns free pages to the file system only in
  ``auto_vacuum = INCREMENTAL`` mode (``PRAGMA incremental_vacuum``; a file made
  without it keeps its size and reuses its free pages); PostgreSQL's autovacuum makes
  dead rows reusable, and ``VACUUM (ANALYZE)`` of the tables a clean touched does it
  at once without blocking reads or writes; InnoDB reuses freed pages by itself.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowdb.database.target import Database

#: The low half of PostgreSQL's cleaner lock key ("clnr"); the high half is the schema's.
CLEANER_KEY = 0x636C6E72
_MYSQL_PREFIX = "flowdb-clean:"


@contextmanager
def cleaner_lock(database: Database) -> Iterator[bool]:
    """Try the cleaner lock without waiting; yield whether this process holds it."""
    name = database.dialect.name
    if name == "postgresql":
        with _postgres_lock(database) as held:
            yield held
    elif name in ("mysql", "mariadb"):
        with _mysql_lock(database) as held:
            yield held
    else:
        with _file_lock(database) as held:
            yield held


@contextmanager
def _postgres_lock(database: Database) -> Iterator[bool]:
    import sqlalchemy as sa

    from flowdb.database.dialects.postgresql import lock_key

    engine = database.engine("flowdb-clean-lock")
    pooled = bool(getattr(database.dialect, "transaction_pooling", False))
    try:
        with engine.connect() as connection:
            key = (lock_key(connection) & ~0xFFFFFFFF) | CLEANER_KEY
            if pooled:
                # Behind a transaction pooler a session lock would stay with whichever
                # server session ran it: hold a transaction lock, in a transaction kept
                # open (so on one server session) until the clean ends.
                held = bool(
                    connection.execute(
                        sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}
                    ).scalar()
                )
                try:
                    yield held
                finally:
                    connection.rollback()
                return
            held = bool(
                connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            )
            connection.commit()
            try:
                yield held
            finally:
                if held:
                    connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    connection.commit()
    finally:
        engine.dispose()


@contextmanager
def _mysql_lock(database: Database) -> Iterator[bool]:
    import sqlalchemy as sa

    database_name = str(database.url.url.database)
    name = f"{_MYSQL_PREFIX}{zlib.crc32(database_name.encode('utf-8')):08x}:{database_name}"[:64]
    engine = database.engine("flowdb-clean-lock")
    try:
        with engine.connect() as connection:
            got = connection.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar()
            held = got == 1
            try:
                yield held
            finally:
                if held:
                    connection.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
    finally:
        engine.dispose()


@contextmanager
def _file_lock(database: Database) -> Iterator[bool]:
    from filelock import FileLock, Timeout

    path = database.dialect.backup_file()  # the SQLite file (None: in memory)
    if path is None:
        yield True
        return
    lock = FileLock(path.with_name(path.name + ".clean-lock"), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def reclaim_space(database: Database, tables: list[str]) -> str:
    """Give space back after a clean where the dialect can; return one line saying what."""
    import sqlalchemy as sa

    name = database.dialect.name
    engine = database.engine("flowdb-clean")
    try:
        if name == "sqlite":
            with engine.connect() as connection:
                mode = connection.exec_driver_sql("PRAGMA auto_vacuum").scalar()
                free = connection.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
                if mode != 2:
                    return (
                        f"{free:,} free pages stay in the file for new rows (it was made "
                        "without auto_vacuum=INCREMENTAL; 'VACUUM' with the server stopped "
                        "shrinks it)"
                    )
                # Each step of the pragma frees one page, and Python's sqlite3 steps a
                # statement without result columns only once: one call per free page.
                raw = connection.connection.dbapi_connection
                assert raw is not None
                for _ in range(int(free)):
                    raw.execute("PRAGMA incremental_vacuum")
                connection.commit()
                left = connection.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
                connection.commit()
                return f"{free - left:,} free pages given back to the file system"
        if name == "postgresql":
            with engine.connect() as connection:
                autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
                autocommit.execute(sa.text(f"VACUUM (ANALYZE) {', '.join(tables)}"))
            return f"VACUUM (ANALYZE) of {', '.join(tables)}: dead rows reusable now"
        return "InnoDB reuses the freed pages for new rows"
    finally:
        engine.dispose()

"""SQLite's part of a clean: the cleaner lock (a file lock beside the database), space back.

SQLite returns free pages to the file system only in ``auto_vacuum = INCREMENTAL``
mode (set on new files by ``connecting.use_wal``): ``PRAGMA incremental_vacuum``; a
file made without it keeps its size and reuses its free pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

#: ``PRAGMA auto_vacuum``'s value for INCREMENTAL.
_INCREMENTAL = 2


@contextmanager
def cleaner_lock(path: Path | None) -> Iterator[bool]:
    """Try the cleaner lock of the file at ``path`` without waiting (in memory: always held)."""
    from filelock import FileLock, Timeout

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


def reclaim_space(engine: Engine) -> str:
    """Give the file's free pages back where its mode allows; one line saying what."""
    with engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA auto_vacuum").scalar()
        free = connection.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
        if mode != _INCREMENTAL:
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

"""SQLite's errors in one line each, recognised by SQLite's result codes."""

from __future__ import annotations

from typing import Any

from flowdb.errors import (
    CorruptDatabaseError,
    DatabaseBusyError,
    DatabaseReadOnlyError,
    DiskFullError,
    FlowdbError,
)

#: SQLite's primary result codes (https://www.sqlite.org/rescode.html).
_SQLITE_CORRUPT = 11
_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26
_SQLITE_FULL = 13
SQLITE_SCHEMA = 17
#: SQLITE_BUSY (another connection holds the lock) and SQLITE_LOCKED (this one's).
SQLITE_BUSY_CODES = frozenset({5, 6})


def translate_error(
    exc: BaseException, text: str, where: str, lock_timeout: float
) -> FlowdbError | None:
    """SQLite's errors about the file: read-only, unopenable, corrupt, locked, full.

    Matched on SQLite's primary result code (``sqlite_errorcode``, set by sqlite3 on
    every error SQLite returned); ``text`` is only quoted.
    """
    code = result_code(exc)
    if code == _SQLITE_READONLY:
        return DatabaseReadOnlyError(
            f"The SQLite database {where} is read-only; give this user write access to the "
            "file and its folder, or use another FLOWDB_DATABASE_URL."
        )
    if code == _SQLITE_CANTOPEN:
        return DatabaseReadOnlyError(
            f"The SQLite database {where} cannot be opened for writing; check that its "
            "folder exists and is writable by this user."
        )
    if code in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
        return CorruptDatabaseError(
            f"{where} is not a SQLite database, or it is damaged ({text}); restore it from "
            "a backup, move it away so that flowdb creates a new one, or point "
            "FLOWDB_DATABASE_URL at another file."
        )
    if code in SQLITE_BUSY_CODES:
        return DatabaseBusyError(
            f"The SQLite database {where} stayed locked by another connection for "
            f"{lock_timeout:g} s; stop the process writing it "
            "(a server under load, a sqlite3 shell) or raise FLOWDB_MIGRATION_LOCK_TIMEOUT."
        )
    if code == _SQLITE_FULL:
        return DiskFullError(
            f"The disk holding the SQLite database {where} is full; free space on it and "
            "run the command again."
        )
    return None


def server_timeout_message(exc: BaseException, busy_timeout_ms: int) -> str | None:
    """The server's busy timeout ran out while other connections kept the file locked."""
    if result_code(exc) not in SQLITE_BUSY_CODES:
        return None
    return (
        f"The database stayed locked by other writers for {busy_timeout_ms // 1000} s "
        "(the server's SQLite busy timeout); try again."
    )


def result_code(exc: BaseException) -> int | None:
    """SQLite's primary result code of an error (directly from sqlite3, or in ``orig``).

    ``sqlite_errorcode`` is the extended code (Python 3.11+); its low byte is the
    primary one. ``None`` for errors SQLite did not return (sqlite3's own misuse errors).
    """
    source: Any = getattr(exc, "orig", None) or exc
    code = getattr(source, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None

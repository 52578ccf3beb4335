"""Turning every error that can reach a user into one ``FlowdbError`` line.

The dialect knows its driver's messages (``Dialect.translate_error``); this module adds
what every dialect shares: OS errors (disk full, permissions, not a folder), Alembic's
``CommandError``, a revision file that does not compile, and any other driver error,
which becomes ``MigrationFailedError`` with the driver's first line. The CLI's edge
(``flowdb.cli.root``) calls ``translate`` once more for errors raised outside a
database's context. What none of these is, is a bug, and keeps its traceback.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from flowdb.database.dialects.base import first_line
from flowdb.errors import (
    BrokenHistoryError,
    ConfigurationError,
    DatabaseReadOnlyError,
    DiskFullError,
    FlowdbError,
    MigrationFailedError,
)

if TYPE_CHECKING:
    # What this module needs of a target.Database, without importing it (no cycle).
    from flowdb.database.handle import DatabaseHandle as Database


def translate(exc: BaseException, database: Database | None = None) -> FlowdbError | None:
    """A one-line ``FlowdbError`` for ``exc``, or ``None`` when it is not a known kind."""
    if isinstance(exc, FlowdbError):
        return exc
    if isinstance(exc, OSError):
        return _os_error(exc, database)
    if isinstance(exc, SyntaxError) and exc.filename:
        return BrokenHistoryError(
            f"The revision file {exc.filename} is not valid Python ({exc.msg}, line "
            f"{exc.lineno}); fix or delete that file."
        )

    text = first_line(exc)
    if database is not None:
        translated = database.dialect.translate_error(exc, text)
        if translated is not None:
            return translated
    if _is_alembic_command_error(exc):
        return MigrationFailedError(f"{text.rstrip('.')}.")
    if _is_driver_error(exc):
        where = database.describe() if database is not None else "the database"
        return MigrationFailedError(
            f"{where[:1].upper()}{where[1:]} rejected a statement and it was rolled back "
            f"({text}); the database stays at the last revision that completed "
            "(see 'flowdb database current')."
        )
    return None


@contextmanager
def translated_errors(database: Database) -> Iterator[None]:
    """Raise the one-line ``FlowdbError`` for any known error raised in the block."""
    try:
        yield
    except FlowdbError:
        raise
    except Exception as exc:
        translated = translate(exc, database)
        if translated is None:
            raise
        raise translated from exc


def _os_error(exc: OSError, database: Database | None) -> FlowdbError:
    target = exc.filename or (database.location() if database is not None else "a file")
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return DiskFullError(
            f"No space left on the device to write {target}; free space there (or raise the "
            "quota) and run the command again."
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DatabaseReadOnlyError(
            f"Cannot write {target} ({reason}); give this user write access to it, or point "
            "FLOWDB_DATABASE_URL (or FLOWDB_HOME) somewhere writable."
        )
    if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.ENAMETOOLONG, errno.ELOOP):
        return ConfigurationError(
            f"Cannot use the path {target} ({reason}); point FLOWDB_DATABASE_URL (or "
            "FLOWDB_HOME) at a file inside an existing folder."
        )
    return DatabaseReadOnlyError(
        f"The operating system refused to read or write {target} ({reason}); check the "
        "file, its folder and the disk, then run the command again."
    )


def _is_driver_error(exc: BaseException) -> bool:
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return False
    import sqlite3

    return isinstance(exc, SQLAlchemyError | sqlite3.Error)


def _is_alembic_command_error(exc: BaseException) -> bool:
    import sys

    if "alembic.util" not in sys.modules:  # never import Alembic just to check
        return False
    from alembic.util import CommandError

    return isinstance(exc, CommandError)

"""Reads of where a database stands that start again when a migration changes it meanwhile.

A reader lists a database's tables, then reads some of them (the version and progress
tables, each table's columns). Where listing and reading cannot be one snapshot (DDL
outside MVCC on PostgreSQL and MariaDB, reflection in several statements), a migration
may drop or change a listed table in between. That is no failure of the read: the read
starts again, a bounded number of times, and only a schema that keeps changing under it
is an error (``DatabaseBusyError``: busy, worth waiting for). Each dialect says which of
its errors mean "a table vanished" (``Dialect.table_vanished``); this loop is shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from flowdb.database.dialects.base import first_line
from flowdb.errors import DatabaseBusyError

if TYPE_CHECKING:
    # What this module needs of a target.Database, without importing it (no cycle).
    from flowdb.database.handle import DatabaseHandle as Database

T = TypeVar("T")

#: How many times one read starts again before a schema that keeps changing is an error.
ATTEMPTS = 8
#: The pause before the n-th new start is n times this (the migration's next commit is near).
BACKOFF_SECONDS = 0.02


def reread(database: Database, read: Callable[[], T], what: str = "its tables") -> T:
    """``read()``, started again while it fails because a table it listed vanished.

    ``what`` names what is read, for the message when the attempts run out.
    """
    vanished: BaseException | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(BACKOFF_SECONDS * attempt)
        try:
            return read()
        except Exception as exc:
            if not database.dialect.table_vanished(exc):
                raise
            vanished = exc

    assert vanished is not None
    raise DatabaseBusyError(
        f"Could not read {what} of {database.describe()}: a migration changed them under "
        f"each of {ATTEMPTS} reads (last: {first_line(vanished)}); try again when it ends."
    ) from vanished

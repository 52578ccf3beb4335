"""SQLite: a file beside the application, the embedded default.

* Migrations: Python's sqlite3 module does not put DDL in a transaction on its own, so
  a migration killed half-way would leave half a schema. flowdb takes over transaction
  control (``isolation_level = None``) and emits ``BEGIN IMMEDIATE`` itself, which also
  takes SQLite's write lock at the start of each migration. Foreign keys stay off while
  migrating: batch mode copies tables, and dropping the old copy would otherwise
  cascade deletes into child tables. Waiting for another connection's write lock is
  bounded by ``FLOWDB_MIGRATION_LOCK_TIMEOUT``.
* The migration lock: an OS file lock (``fcntl`` via ``filelock``) on a file beside the
  database, released by the kernel when the holder dies. The holder writes who it is
  into a second file beside it for waiters to read.
* WAL mode from the first transaction that writes the file (``use_wal``), so that a
  migration and the API's readers and writer never starve each other; transactions
  that only read (execution option ``READS_ONLY``) begin deferred and never wait for
  the writer.
* The server: WAL (readers never block the writer), a busy timeout, foreign keys on,
  and ``BEGIN IMMEDIATE`` for writes so that two writers never both read and then fail
  to upgrade their locks; reads use plain deferred transactions on their own engine.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

from flowdb.database.dialects.base import Catalog, Features
from flowdb.database.dialects.sqlite import catalogue, cleaning, errors
from flowdb.database.dialects.sqlite.connecting import (
    SERVER_BUSY_TIMEOUT_MS,
    file_path,
    read_mode,
    use_wal,
)
from flowdb.database.dialects.sqlite.errors import SQLITE_BUSY_CODES, result_code
from flowdb.database.dialects.sqlite.lock import SqliteLocking
from flowdb.database.lockinfo import Waiter
from flowdb.errors import FlowdbError

__all__ = [
    "SERVER_BUSY_TIMEOUT_MS",
    "SqliteDialect",
    "file_path",
    "read_mode",
    "result_code",
    "use_wal",
]


class SqliteDialect(SqliteLocking):
    """SQLite files (and, for tests and the server only, memory databases)."""

    features: ClassVar[Features] = Features(
        render_as_batch=True,
        stores_time_zones=False,
        separate_read_engine=True,
        single_writer=True,
        batch_pause=0.1,
        default_batch_rows=2_000,
    )

    def read_catalog(self, waiter: Waiter) -> Catalog:
        """Read with sqlite3 directly (no SQLAlchemy); a missing file reads as empty."""
        path = self.path
        if path is not None and (path.is_dir() or path.parent.is_file()):
            self.prepare_folder()  # raises, naming the setting
        if path is None or not path.exists():
            return Catalog(versions=None, tables=frozenset())
        while True:
            try:
                return catalogue.read_catalog_once(path)
            except sqlite3.OperationalError as exc:
                if result_code(exc) not in SQLITE_BUSY_CODES:
                    raise
                waiter.still_waiting(self._holder(), other="another connection writing the file")

    def table_vanished(self, exc: BaseException) -> bool:
        """``no such table`` from sqlite3 (directly or through SQLAlchemy), or reflection's."""
        source = getattr(exc, "orig", None) or exc
        # "no such table" has only the generic SQLITE_ERROR code, shared by every bad
        # statement; SQLite's messages are fixed English text (never translated).
        return super().table_vanished(exc) or (
            isinstance(source, sqlite3.OperationalError)
            and (result_code(exc) == errors.SQLITE_SCHEMA or "no such table" in str(source))
        )

    # --- maintenance ------------------------------------------------------------------------

    def backup_file(self) -> Path | None:
        """The database file (memory databases are never backed up)."""
        return self.path

    def read_rows(self, table: str) -> list[dict[str, Any]] | None:
        """Every row of ``table`` by ``id``, with ``sqlite3`` in one read transaction."""
        path = self.path
        if path is None:
            return None  # a memory database: only SQLAlchemy's connection sees it
        connection = sqlite3.connect(
            f"{path.as_uri()}?mode={read_mode(path)}",
            uri=True,
            timeout=self.settings.migration_lock_timeout,
        )
        try:
            connection.row_factory = sqlite3.Row
            rows = connection.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            return [dict(row) for row in rows]
        finally:
            connection.close()

    def cleaner_lock(self) -> AbstractContextManager[bool]:
        """A file lock beside the database file."""
        return cleaning.cleaner_lock(self.backup_file())

    def reclaim_space(self, tables: list[str]) -> str:
        """``PRAGMA incremental_vacuum`` where the file allows it."""
        engine = self.create_sync_engine("flowdb-clean")
        try:
            return cleaning.reclaim_space(engine)
        finally:
            engine.dispose()

    def drop_statements(self, tables: list[str], enum_types: tuple[str, ...]) -> list[str]:
        """``DROP TABLE IF EXISTS`` each table; SQLite has no enum types."""
        return [f'DROP TABLE IF EXISTS "{name}"' for name in tables]

    def clear_statements(self, tables: list[str]) -> list[str]:
        """``DELETE FROM`` each table, children first (SQLite has no TRUNCATE)."""
        return [f'DELETE FROM "{name}"' for name in tables]

    # --- errors -----------------------------------------------------------------------------
    def translate_error(self, exc: BaseException, text: str) -> FlowdbError | None:
        """The file read-only, unopenable, corrupt, locked, full: by result code (``errors``)."""
        where = str(self.path) if self.path is not None else self.url.redacted()
        return errors.translate_error(exc, text, where, self.settings.migration_lock_timeout)

    def server_timeout_message(self, exc: BaseException, text: str) -> str | None:
        """The server's busy timeout ran out while other connections kept the file locked."""
        return errors.server_timeout_message(exc, SERVER_BUSY_TIMEOUT_MS)

    # --- SQL for migration helpers ------------------------------------------------------------

    @staticmethod
    def text_position(needle: str, column: str) -> str:
        """``instr`` (SQLite's ``strpos``)."""
        return f"instr({column}, '{needle}')"

    # --- snapshots (flowdb.database.fresh; the work is in sqlite_catalogue) -------------------

    def run_script(self, statements: list[str]) -> None:
        """One ``BEGIN IMMEDIATE`` transaction on sqlite3 itself: no SQLAlchemy to import."""
        self.check_migratable()
        assert self.path is not None
        catalogue.run_script(self.path, statements, self.settings.migration_lock_timeout)

    def dump_schema(self, exclude: frozenset[str]) -> list[str]:
        """SQLite's own ``CREATE`` text of each table and index, then the rows."""
        assert self.path is not None
        return catalogue.dump(self.path, exclude)

    def catalogue(self, skip_rows: frozenset[str]) -> dict[str, Any]:
        """Tables, constraint clauses (sorted), indexes and rows of the file."""
        assert self.path is not None
        return catalogue.catalogue(self.path, skip_rows)

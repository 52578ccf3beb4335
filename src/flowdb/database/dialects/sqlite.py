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

import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from flowdb.database.bookkeeping import VERSION_TABLE as BOOKKEEPING_VERSION_TABLE
from flowdb.database.dialects.base import READS_ONLY, Catalog, Dialect
from flowdb.database.status import PROGRESS_TABLE
from flowdb.errors import (
    ConfigurationError,
    CorruptDatabaseError,
    DatabaseBusyError,
    DatabaseReadOnlyError,
    DiskFullError,
    FlowdbError,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from flowdb.database.locking import LockHolder, Waiter
    from flowdb.database.urls import DatabaseUrl
    from flowdb.settings import Settings

logger = logging.getLogger("flowdb.migrations.lock")

#: The server's busy timeout: how long an API write waits for another writer.
SERVER_BUSY_TIMEOUT_MS = 30_000
_READ_POLL_SECONDS = 0.2
_NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smbfs", "smb3", "fuse.sshfs", "9p", "afs"}
_VERSION_TABLE = "alembic_version"
#: How long switching a file to WAL mode waits for other connections to let go of it.
_WAL_SWITCH_WAIT_MS = 2_000


class SqliteDialect(Dialect):
    """SQLite files (and, for tests and the server only, memory databases)."""

    name: ClassVar[str] = "sqlite"
    label: ClassVar[str] = "SQLite"
    drivers: ClassVar[frozenset[str]] = frozenset({"", "pysqlite", "aiosqlite"})
    sync_driver: ClassVar[str] = "sqlite+pysqlite"
    async_driver: ClassVar[str] = "sqlite+aiosqlite"
    render_as_batch: ClassVar[bool] = True
    stores_time_zones: ClassVar[bool] = False
    separate_read_engine: ClassVar[bool] = True

    def __init__(self, url: DatabaseUrl, settings: Settings) -> None:
        super().__init__(url, settings)
        self.path = file_path(url)

    # --- identity -----------------------------------------------------------------------

    def location(self) -> str:
        """The file's absolute path (or the URL of a memory database)."""
        return str(self.path) if self.path is not None else self.url.redacted()

    @property
    def lock_identity(self) -> str:
        """The file's absolute path."""
        return str(self.path) if self.path is not None else "sqlite-memory"

    def exists(self) -> bool:
        """Whether the file exists (memory databases always do)."""
        return self.path is None or self.path.exists()

    def check_migratable(self) -> None:
        """Refuse memory databases (they vanish with the process); check the folder."""
        if self.path is None:
            raise ConfigurationError(
                f"{self.url.redacted()} is a SQLite memory database, which vanishes when this "
                "command ends; point FLOWDB_DATABASE_URL at a file, e.g. "
                "sqlite:////var/lib/flowdb/flowdb.db."
            )
        self.prepare_folder()

    def prepare_folder(self) -> None:
        """Make sure the file's folder exists (creating the default home) and is a folder."""
        if self.path is None:
            return
        folder = self.path.parent
        by_home = self.settings.database_url is None
        variable = "FLOWDB_HOME" if by_home else "FLOWDB_DATABASE_URL"
        if not folder.exists():
            if folder == self.settings.resolved_home:
                folder.mkdir(parents=True, exist_ok=True)
                return
            raise ConfigurationError(
                f"The folder {folder} of the SQLite database does not exist; create it or "
                f"point {variable} at an existing folder."
            )
        if not folder.is_dir():
            raise ConfigurationError(
                f"{folder} is not a folder, so the SQLite database {self.path.name} cannot "
                f"live there; point {variable} at a folder."
            )
        if self.path.is_dir():
            raise ConfigurationError(
                f"{self.path} is a folder, not a SQLite database file; point {variable} at a "
                "file path."
            )

    # --- engines ------------------------------------------------------------------------

    def create_sync_engine(self, application_name: str) -> Engine:
        """pysqlite with flowdb's BEGIN IMMEDIATE and a busy wait bounded by the lock timeout."""
        from sqlalchemy import create_engine, event
        from sqlalchemy.pool import NullPool

        self.prepare_folder()
        engine = create_engine(
            self.sync_url,
            poolclass=NullPool,
            connect_args={"timeout": self.settings.migration_lock_timeout},
        )

        busy_ms = round(self.settings.migration_lock_timeout * 1000)

        @event.listens_for(engine, "connect")
        def _take_over_transactions(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            if connection.get_execution_options().get(READS_ONLY):
                # A WAL reader never waits for the writer; IMMEDIATE would queue behind it.
                connection.exec_driver_sql("BEGIN")
                return
            use_wal(connection.connection.dbapi_connection, busy_ms)
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def create_async_engine(self, *, write: bool) -> AsyncEngine:
        """aiosqlite in WAL mode; writes begin IMMEDIATE, reads plain BEGIN."""
        from sqlalchemy import event
        from sqlalchemy.ext.asyncio import create_async_engine

        begin = "BEGIN IMMEDIATE" if write else "BEGIN"
        engine = create_async_engine(self.async_url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _server_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # The driver's own transaction handling would defer BEGIN to the first write.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in (
                "PRAGMA journal_mode=WAL",
                f"PRAGMA busy_timeout={SERVER_BUSY_TIMEOUT_MS}",
                "PRAGMA foreign_keys=ON",
                "PRAGMA synchronous=NORMAL",
            ):
                cursor.execute(pragma)
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(connection: Any) -> None:
            connection.exec_driver_sql(begin)

        return engine

    # --- reading without writing ----------------------------------------------------------

    def read_catalog(self, waiter: Waiter) -> Catalog:
        """Read with sqlite3 directly (no SQLAlchemy); a missing file reads as empty."""
        path = self.path
        if path is not None and (path.is_dir() or path.parent.is_file()):
            self.prepare_folder()  # raises, naming the setting
        if path is None or not path.exists():
            return Catalog(versions=None, tables=frozenset())
        while True:
            try:
                return self._read_catalog_once(path)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                waiter.still_waiting(self._holder(), other="another connection writing the file")

    def table_vanished(self, exc: BaseException) -> bool:
        """``no such table`` from sqlite3 (directly or through SQLAlchemy), or reflection's."""
        source = getattr(exc, "orig", None) or exc
        text = str(source)
        return super().table_vanished(exc) or (
            isinstance(source, sqlite3.OperationalError)
            and ("no such table" in text or "database schema has changed" in text)
        )

    def _read_catalog_once(self, path: Path) -> Catalog:
        # A process killed inside a migration leaves a "hot" rollback journal beside the
        # file; the first reader must roll it back, which a read-only connection cannot
        # do ("attempt to write a readonly database"). Rolling back restores the last
        # committed revision, so reading then is both allowed and necessary; mode=rw
        # never creates a file.
        hot_journal = path.with_name(f"{path.name}-journal")
        hot = hot_journal.exists() and hot_journal.stat().st_size > 0
        mode = "rw" if hot else read_mode(path)
        connection = sqlite3.connect(
            f"{path.as_uri()}?mode={mode}", uri=True, timeout=_READ_POLL_SECONDS
        )
        try:
            # One read transaction: the listing and the rows are one snapshot of the file
            # (a migration's commit waits for it, or, in WAL mode, does not change it).
            connection.execute("BEGIN")
            tables = frozenset(
                row[0]
                for row in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'"
                )
            )
            in_progress: tuple[tuple[str, str, int], ...] = ()
            if PROGRESS_TABLE in tables:
                query = f"SELECT revision, phase, rows_done FROM {PROGRESS_TABLE}"
                in_progress = tuple((r, p, int(n)) for r, p, n in connection.execute(query))
            bookkeeping: int | None = None
            if BOOKKEEPING_VERSION_TABLE in tables:  # so an upgrade at head needs no SQLAlchemy
                query = f"SELECT MAX(version) FROM {BOOKKEEPING_VERSION_TABLE}"
                found = connection.execute(query).fetchone()
                bookkeeping = None if found is None or found[0] is None else int(found[0])
            if _VERSION_TABLE not in tables:
                return Catalog(None, tables, in_progress, bookkeeping)
            rows = connection.execute(f"SELECT version_num FROM {_VERSION_TABLE}")
            versions = [row[0] for row in rows]
            return Catalog(versions, tables, in_progress, bookkeeping)
        finally:
            connection.close()

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

    # --- the migration lock ---------------------------------------------------------------

    @contextmanager
    def migration_lock(self, command: str, waiter: Waiter) -> Iterator[None]:
        """A file lock beside the database; its holder described in a JSON file beside it."""
        from filelock import FileLock, Timeout

        from flowdb.database.locking import me

        self.check_migratable()
        assert self.path is not None
        _warn_if_network_filesystem(self.path)
        lock = FileLock(self._lock_path, thread_local=False)
        try:
            while True:
                try:
                    lock.acquire(timeout=min(0.5, waiter.remaining()))
                    break
                except Timeout:
                    waiter.still_waiting(self._holder())
        except PermissionError as exc:
            raise DatabaseReadOnlyError(
                f"Cannot create the migration lock file {self._lock_path} ({exc.strerror}); "
                "give this user write access to the database folder."
            ) from None
        try:
            self._holder_path.write_text(json.dumps(asdict(me(command))), encoding="utf-8")
            self._wait_until_writable(waiter)
            yield
        finally:
            self._holder_path.unlink(missing_ok=True)
            lock.release()

    def _wait_until_writable(self, waiter: Waiter) -> None:
        """Wait, reporting it, while another connection (not a migration) writes the file.

        SQLite's own busy wait is silent; probing the write lock here first lets the wait
        be reported and bounded like the migration lock's. The migrations themselves keep
        a busy timeout for the moment between this probe and their first BEGIN.
        """
        assert self.path is not None
        if not self.path.exists():
            return
        while True:
            connection = sqlite3.connect(
                f"{self.path.as_uri()}?mode=rw",
                uri=True,
                timeout=_READ_POLL_SECONDS,
                isolation_level=None,
            )
            try:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("ROLLBACK")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            finally:
                connection.close()
            waiter.what = "the database"
            waiter.still_waiting(None, other="another connection writing the file")

    @property
    def _lock_path(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".migration-lock")

    @property
    def _holder_path(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".migration-lock.json")

    def _holder(self) -> LockHolder | None:
        from flowdb.database.locking import LockHolder

        if self.path is None:
            return None
        try:
            return LockHolder(**json.loads(self._holder_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def migration_running(self) -> LockHolder | None:
        """The holder the lock's JSON file names, if that process is alive on this host.

        The file is removed when the lock is released; a holder killed with SIGKILL
        leaves it behind, but then its process is gone (and the kernel freed the lock).
        """
        import os
        import socket

        holder = self._holder()
        if holder is None or holder.pid is None or holder.host != socket.gethostname():
            return holder
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return holder  # alive, but another user's
        return holder

    # --- maintenance ------------------------------------------------------------------------

    def backup_file(self) -> Path | None:
        """The database file (memory databases are never backed up)."""
        return self.path

    def drop_statements(self, tables: list[str], enum_types: tuple[str, ...]) -> list[str]:
        """``DROP TABLE IF EXISTS`` each table; SQLite has no enum types."""
        return [f'DROP TABLE IF EXISTS "{name}"' for name in tables]

    def clear_statements(self, tables: list[str]) -> list[str]:
        """``DELETE FROM`` each table, children first (SQLite has no TRUNCATE)."""
        return [f'DELETE FROM "{name}"' for name in tables]

    # --- errors -----------------------------------------------------------------------------

    def translate_error(self, exc: BaseException, text: str) -> FlowdbError | None:
        """SQLite's errors about the file: read-only, unopenable, corrupt, locked, full."""
        lowered = text.lower()
        where = str(self.path) if self.path is not None else self.url.redacted()
        if "readonly database" in lowered or "read-only" in lowered:
            return DatabaseReadOnlyError(
                f"The SQLite database {where} is read-only; give this user write access to the "
                "file and its folder, or use another FLOWDB_DATABASE_URL."
            )
        if "unable to open database file" in lowered:
            return DatabaseReadOnlyError(
                f"The SQLite database {where} cannot be opened for writing; check that its "
                "folder exists and is writable by this user."
            )
        if "file is not a database" in lowered or "malformed" in lowered:
            return CorruptDatabaseError(
                f"{where} is not a SQLite database, or it is damaged ({text}); restore it from "
                "a backup, move it away so that flowdb creates a new one, or point "
                "FLOWDB_DATABASE_URL at another file."
            )
        if "database is locked" in lowered or "database is busy" in lowered:
            return DatabaseBusyError(
                f"The SQLite database {where} stayed locked by another connection for "
                f"{self.settings.migration_lock_timeout:g} s; stop the process writing it "
                "(a server under load, a sqlite3 shell) or raise FLOWDB_MIGRATION_LOCK_TIMEOUT."
            )
        if "database or disk is full" in lowered:
            return DiskFullError(
                f"The disk holding the SQLite database {where} is full; free space on it and "
                "run the command again."
            )
        return None

    def server_timeout_message(self, exc: BaseException, text: str) -> str | None:
        """The server's busy timeout ran out while other connections kept the file locked."""
        lowered = text.lower()
        if "database is locked" not in lowered and "database is busy" not in lowered:
            return None
        return (
            f"The database stayed locked by other writers for {SERVER_BUSY_TIMEOUT_MS // 1000} s "
            "(the server's SQLite busy timeout); try again."
        )

    # --- SQL for migration helpers ------------------------------------------------------------

    @staticmethod
    def text_position(needle: str, column: str) -> str:
        """``instr`` (SQLite's ``strpos``)."""
        return f"instr({column}, '{needle}')"

    # --- snapshots (flowdb.database.fresh; the work is in sqlite_catalogue) -------------------

    def run_script(self, statements: list[str]) -> None:
        """One ``BEGIN IMMEDIATE`` transaction on sqlite3 itself: no SQLAlchemy to import."""
        from flowdb.database.dialects import sqlite_catalogue

        self.check_migratable()
        assert self.path is not None
        sqlite_catalogue.run_script(self.path, statements, self.settings.migration_lock_timeout)

    def dump_schema(self, exclude: frozenset[str]) -> list[str]:
        """SQLite's own ``CREATE`` text of each table and index, then the rows."""
        from flowdb.database.dialects import sqlite_catalogue

        assert self.path is not None
        return sqlite_catalogue.dump(self.path, exclude)

    def catalogue(self, skip_rows: frozenset[str]) -> dict[str, Any]:
        """Tables, constraint clauses (sorted), indexes and rows of the file."""
        from flowdb.database.dialects import sqlite_catalogue

        assert self.path is not None
        return sqlite_catalogue.catalogue(self.path, skip_rows)


def use_wal(connection: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """Put the database file in WAL mode (it stays so), from the first connection that writes.

    Online migrations depend on it: in the rollback-journal mode a new file starts in,
    one open reader keeps a migration (or an API write) from committing, and a migration
    keeps every reader out while it commits; in WAL mode readers and the one writer do
    not wait for each other. Switching needs the file to itself for a moment: when other
    connections keep it busy (a file an older flowdb made), it stays as it is this time
    and the next command tries again. A read-only file is left as it is as well (the
    write that follows reports it).
    """
    mode = connection.execute("PRAGMA journal_mode").fetchone()
    if mode is not None and str(mode[0]).lower() == "wal":
        return
    connection.execute(f"PRAGMA busy_timeout = {min(busy_timeout_ms, _WAL_SWITCH_WAIT_MS)}")
    try:
        connection.execute("PRAGMA journal_mode = WAL")
    except sqlite3.OperationalError as exc:
        logger.debug("The SQLite database stays in its journal mode for now: %s", exc)
    finally:
        connection.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")


def read_mode(path: Path) -> str:
    """The ``mode`` in which to open ``path`` only to read it: ``rw`` when this user may write.

    A read-only connection to a WAL file cannot remove the ``-wal`` and ``-shm`` files
    when it closes, and leaves them behind; a read-write connection that only reads
    changes nothing in the file and, closing last, tidies them away.
    """
    import os

    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    return "rw" if writable else "ro"


def file_path(url: DatabaseUrl) -> Path | None:
    """The SQLite database file of ``url``, or ``None`` for memory databases."""
    database = url.database
    if not database or database == ":memory:" or "mode=memory" in url.text:
        return None
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database).expanduser().resolve()


def _warn_if_network_filesystem(path: Path) -> None:
    """Warn once when the SQLite file sits on a network file system, where file locks lie."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    best, fs_type = "", ""
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3 and str(path).startswith(fields[1]) and len(fields[1]) > len(best):
            best, fs_type = fields[1], fields[2]
    if fs_type in _NETWORK_FILESYSTEMS:
        logger.warning(
            "The SQLite database %s is on a %s network file system, where file locking is "
            "unreliable; do not share it between hosts (use PostgreSQL for several replicas).",
            path,
            fs_type,
        )

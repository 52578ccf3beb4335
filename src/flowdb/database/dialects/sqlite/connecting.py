"""Connecting to SQLite: the file and its folder, the engines, WAL mode.

Migrations run on pysqlite with flowdb's own ``BEGIN IMMEDIATE`` (sqlite3 does not put
DDL in a transaction on its own) and a busy wait bounded by the lock timeout; the API
server on aiosqlite in WAL mode, writes ``BEGIN IMMEDIATE``, reads plain ``BEGIN``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from flowdb.database.dialects.base import READS_ONLY, Dialect
from flowdb.database.urls import DatabaseUrl
from flowdb.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from flowdb.settings import Settings

logger = logging.getLogger("flowdb.migrations.lock")

#: The server's busy timeout: how long an API write waits for another writer.
SERVER_BUSY_TIMEOUT_MS = 30_000
_READ_POLL_SECONDS = 0.2
_NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smbfs", "smb3", "fuse.sshfs", "9p", "afs"}
#: How long switching a file to WAL mode waits for other connections to let go of it.
_WAL_SWITCH_WAIT_MS = 2_000


class SqliteConnecting(Dialect):
    """SQLite's identity, file and engines (the first layer of ``SqliteDialect``)."""

    name: ClassVar[str] = "sqlite"
    label: ClassVar[str] = "SQLite"
    drivers: ClassVar[frozenset[str]] = frozenset({"", "pysqlite", "aiosqlite"})
    sync_driver: ClassVar[str] = "sqlite+pysqlite"
    async_driver: ClassVar[str] = "sqlite+aiosqlite"

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
    pages = connection.execute("PRAGMA page_count").fetchone()
    if pages is not None and pages[0] == 0:
        # A new file: free pages can go back to the file system after a clean
        # (PRAGMA incremental_vacuum), which SQLite allows only if set before any table.
        connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
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

"""Copies of a SQLite database taken before a command changes it, and putting one back.

Every command that changes the schema calls ``before_change`` once, under the
migration lock, after its plan was approved and before its first change. On a
dialect that can copy its database (``Dialect.backup_file``: SQLite) and a database
that holds something, it writes a consistent copy with SQLite's online backup API:
one read transaction over the whole file, so a server writing in WAL mode meanwhile
neither blocks nor tears the copy. The copy goes to ``FLOWDB_BACKUP_DIR`` as
``<database>-<revision12>-<UTC time>.db``; only the newest ``FLOWDB_BACKUP_KEEP`` of
that database's copies stay (``0`` turns backups off). A copy that cannot be written
stops the command before it changes anything.

``restore`` checks a copy (integrity, flowdb's, a revision this history knows) and
writes it back into the live file with the same API, so open connections see either
the old database or the restored one, never a mix.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flowdb.database.bookkeeping import ALEMBIC_VERSION_TABLE, SELECT_REVISIONS
from flowdb.database.events import BackupWritten
from flowdb.database.fresh import BOOKKEEPING
from flowdb.database.planning import Declined, Plan
from flowdb.errors import (
    CorruptDatabaseError,
    DatabaseBusyError,
    DatabaseNewerThanCodeError,
    DatabaseReadOnlyError,
    DiskFullError,
    FlowdbError,
    ForeignDatabaseError,
    UsageError,
)

if TYPE_CHECKING:
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database

logger = logging.getLogger("flowdb.migrations")

_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
#: The tables whose row counts a restore compares (the ones people care to lose).
MAIN_TABLES = ("flow", "flow_run", "task_run", "log", "deployment")


def backup_folder(database: Database) -> Path:
    """Where backups go: ``FLOWDB_BACKUP_DIR``, else ``backups`` in the home folder."""
    folder = database.settings.backup_dir
    if folder is None:
        return database.settings.resolved_home / "backups"
    return folder.expanduser().resolve()


def backups_enabled(database: Database) -> bool:
    """Whether this database is backed up: a dialect that can copy it, and KEEP above 0."""
    return database.dialect.backup_file() is not None and database.settings.backup_keep > 0


def before_change(
    database: Database, status: SchemaStatus, command: str, *, spare: Path | None = None
) -> Path | None:
    """Back up ``database`` before ``command`` changes it; the one call every changer makes.

    Call it under the migration lock, after the plan was approved, before the first
    change. Returns the copy, or ``None`` when nothing was written: backups are off,
    the dialect cannot copy its database (the plan names a dump command instead), or
    the database holds nothing. ``spare`` is a backup the pruning must leave (the one
    a restore is about to copy).
    """
    if not backups_enabled(database) or is_empty(status):
        return None
    path = take_backup(database, status.current, spare=spare)

    logger.info(
        "Backed up %s to %s before %s",
        database.location(),
        path,
        command,
        extra={"event": BackupWritten(str(path))},
    )
    return path


def is_empty(status: SchemaStatus) -> bool:
    """Whether there is nothing to keep: no revision and no table but flowdb's bookkeeping."""

    return status.current is None and not (status.tables - BOOKKEEPING)


def take_backup(database: Database, revision: str | None, *, spare: Path | None = None) -> Path:
    """Write a consistent copy of the database file, then prune older copies; return it.

    Written under a temporary name and renamed, so a copy that failed half way (a
    full disk) never counts as a backup. Raises ``DiskFullError`` or
    ``DatabaseReadOnlyError`` naming the folder when it cannot be written.
    """
    source = database.dialect.backup_file()
    assert source is not None
    folder = backup_folder(database)
    target = _new_name(folder, source, revision)
    partial = target.with_name(f".{target.name}.partial")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        copy_database(source, partial, database.settings.migration_lock_timeout)
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as exc:
        for leftover in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):  # (the folder itself may be what is wrong)
                partial.with_name(partial.name + leftover).unlink(missing_ok=True)
        raise _backup_error(exc, folder, source) from None
    prune(database, spare=spare)
    return target


def copy_database(source: Path, target: Path, timeout: float) -> None:
    """Copy the SQLite file ``source`` to ``target`` with the online backup API.

    One step over all pages holds one read transaction, so the copy is the database
    as of one commit even while another connection writes (WAL). The copy is switched
    to the rollback journal so it is one self-contained file.
    """
    src = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True, timeout=timeout)
    try:
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    with open(target, "rb+") as handle:
        os.fsync(handle.fileno())


def _new_name(folder: Path, source: Path, revision: str | None) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime(_STAMP_FORMAT)
    base = f"{source.stem}-{(revision or 'base')[:12]}-{stamp}"
    target, n = folder / f"{base}.db", 1
    while target.exists():  # two backups within one second
        n += 1
        target = folder / f"{base}-{n}.db"
    return target


def _pattern(source: Path) -> re.Pattern[str]:
    return re.compile(
        rf"^{re.escape(source.stem)}-(?P<rev>[0-9a-z]{{4,12}})-(?P<at>\d{{8}}T\d{{6}}Z)"
        r"(?:-(?P<n>\d+))?\.db$"
    )


def backups_of(database: Database) -> list[Path]:
    """flowdb's backups of this database in the backup folder, newest first."""
    source = database.dialect.backup_file()
    folder = backup_folder(database)
    if source is None or not folder.is_dir():
        return []
    pattern = _pattern(source)
    found: list[tuple[str, int, Path]] = []
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match and path.is_file():
            found.append((match["at"], int(match["n"] or 1), path))
    return [path for *_, path in sorted(found, reverse=True)]


def prune(database: Database, *, spare: Path | None = None) -> list[Path]:
    """Delete all but the newest ``FLOWDB_BACKUP_KEEP`` backups of this database.

    Only files named like flowdb's backups of this very database are touched, and
    never ``spare``.
    """
    old = [p for p in backups_of(database)[database.settings.backup_keep :] if p != spare]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def _backup_error(exc: BaseException, folder: Path, source: Path) -> FlowdbError:
    """The one line for a backup that could not be written; nothing was changed."""
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    what = f"Cannot back up {source} into {folder}"
    if code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or "disk is full" in text:
        return DiskFullError(
            f"{what}: no space left; free space there or point FLOWDB_BACKUP_DIR elsewhere "
            "(nothing was changed)."
        )
    if "malformed" in text or "not a database" in text:
        return CorruptDatabaseError(
            f"{what}: the database is damaged ({exc}); nothing was changed. Restore it from "
            "a backup ('flowdb database restore') before changing it."
        )
    if "locked" in text or "busy" in text:
        return DatabaseBusyError(
            f"{what}: another connection kept the database locked; nothing was changed. "
            "Run the command again when it is done (FLOWDB_MIGRATION_LOCK_TIMEOUT bounds the wait)."
        )
    reason = getattr(exc, "strerror", None) or str(exc)
    return DatabaseReadOnlyError(
        f"{what} ({reason}); make the folder writable, point FLOWDB_BACKUP_DIR elsewhere, "
        "or set FLOWDB_BACKUP_KEEP=0 to go on without a backup (nothing was changed)."
    )


# --- restore ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Contents:
    """What a database file holds: its revision and the row counts of the main tables."""

    revision: str | None
    rows: dict[str, int]

    def describe(self) -> str:
        """``at 5f3c7a9d2b18: flow 3, flow_run 120, ...``."""
        counts = ", ".join(f"{table} {count:,}" for table, count in self.rows.items())
        return f"at {self.revision or 'base'}: {counts or 'no tables'}"


@dataclass(frozen=True)
class RestorePlan:
    """A restore about to happen: the copy, and what it replaces with what."""

    source: Path
    current: Contents
    backup: Contents


#: Called under the lock with the plan; returns whether to go on.
RestoreApproval = Callable[[RestorePlan], bool]


def choose_backup(database: Database, given: Path | None) -> Path:
    """The file to restore: ``given``, or the newest backup of this database."""
    if database.dialect.backup_file() is None:
        raise UsageError(
            f"restore works on SQLite files only; {database.describe()} is restored with its "
            "server's own tools (the downgrade plan names the dump command)."
        )
    if given is not None:
        if not given.is_file():
            raise UsageError(f"No backup file {given}; give an existing file or none (latest).")
        return given.resolve()
    found = backups_of(database)
    if not found:
        raise UsageError(
            f"No backups of {database.location()} in {backup_folder(database)}; give a file "
            "or set FLOWDB_BACKUP_DIR to where they are."
        )
    return found[0]


def read_contents(path: Path) -> Contents:
    """The revision and main-table row counts of the SQLite file at ``path`` (read only)."""
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        query = "SELECT name FROM sqlite_master WHERE type='table'"
        tables = {row[0] for row in connection.execute(query)}
        revision = None
        if ALEMBIC_VERSION_TABLE in tables:
            row = connection.execute(SELECT_REVISIONS).fetchone()
            revision = row[0] if row else None
        rows = {
            table: int(connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
            for table in MAIN_TABLES
            if table in tables
        }
        return Contents(revision, rows)
    finally:
        connection.close()


def check_backup(database: Database, path: Path) -> Contents:
    """Refuse a file that is damaged, not flowdb's, or at a revision this flowdb lacks."""
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            verdict = [row[0] for row in connection.execute("PRAGMA integrity_check")]
            tables = {
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise CorruptDatabaseError(
            f"{path} is not a SQLite database or is damaged ({exc}); choose another backup."
        ) from None
    if verdict != ["ok"]:
        raise CorruptDatabaseError(
            f"{path} is damaged (integrity check: {verdict[0]}); choose another backup."
        )
    if ALEMBIC_VERSION_TABLE not in tables:
        raise ForeignDatabaseError(
            f"{path} is not a flowdb database (no {ALEMBIC_VERSION_TABLE} table); choose a flowdb "
            "backup."
        )
    contents = read_contents(path)
    if contents.revision is not None and not database.history.knows(contents.revision):
        raise DatabaseNewerThanCodeError(
            f"{path} is at revision {contents.revision}, which this flowdb does not know (a "
            "newer flowdb's, or another application's); restore it with the flowdb that made it."
        )
    return contents


@dataclass(frozen=True)
class Restored:
    """A restore that happened: from which copy, to which revision, and its own undo copy."""

    source: Path
    revision: str | None
    undo: Path | None


def restore(database: Database, given: Path | None, approve: RestoreApproval) -> Restored:
    """Put a backup back into the live database file; say what was restored and its undo.

    Checks the file, takes the migration lock, asks ``approve`` (which sees both
    sides), backs up the current database (so the restore can be undone) and copies
    the backup into the live file with the online backup API. Raises ``Declined``
    when ``approve`` says no.
    """

    path = choose_backup(database, given)
    backup = check_backup(database, path)
    live = database.dialect.backup_file()
    assert live is not None
    database.dialect.check_migratable()
    with database.errors(), database.lock("restore"):
        status = database.status()
        current = read_contents(live) if live.exists() else Contents(None, {})
        plan = RestorePlan(path, current, backup)
        if not approve(plan):
            raise Declined(Plan("upgrade", status.current, backup.revision, ()))
        saved = before_change(database, status, "restore", spare=path)
        _copy_into(path, live, database.settings.migration_lock_timeout)
    return Restored(path, backup.revision, saved)


def _copy_into(backup: Path, live: Path, timeout: float) -> None:
    """Write ``backup`` over the live file through SQLite, under its write lock."""
    src = sqlite3.connect(f"{backup.as_uri()}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(live, timeout=timeout, isolation_level=None)
        try:
            src.backup(dst, pages=-1)
        finally:
            dst.close()
    finally:
        src.close()

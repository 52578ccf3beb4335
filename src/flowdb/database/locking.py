"""The migration lock: one writer of the schema at a time, across threads, processes and hosts.

* PostgreSQL: a session-level advisory lock on a fixed key, held on a dedicated
  autocommit connection for the whole command. The holder's identity travels in that
  connection's ``application_name``, where waiters read it from ``pg_stat_activity``.
  A holder that dies loses its session and with it the lock. Behind PgBouncer in
  transaction pooling mode session locks do not hold: point migrations at the
  server directly.
* SQLite: an OS file lock (``fcntl``/``flock`` via ``filelock``) on a file beside the
  database, released by the kernel when the holder dies. The holder writes who it is
  into a second file beside it for waiters to read. Each migration additionally
  runs inside ``BEGIN IMMEDIATE`` (see ``engines``).

Waiting is polled with a bounded timeout (``FLOWDB_MIGRATION_LOCK_TIMEOUT``). Waiters
report the holder through the ``flowdb.migrations.lock`` logger; the CLI shows it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flowdb.database.urls import DatabaseUrl
from flowdb.errors import DatabaseReadOnlyError, MigrationLockTimeoutError

logger = logging.getLogger("flowdb.migrations.lock")

#: The advisory lock key: ASCII "flow", below 2**31 so pg_locks shows it in ``objid``.
ADVISORY_LOCK_KEY = 0x666C6F77
POLL_SECONDS = 0.1
REPORT_EVERY_SECONDS = 10.0
_APPLICATION_PREFIX = "flowdb-lock"
_NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smbfs", "smb3", "fuse.sshfs", "9p", "afs"}

_held: dict[str, tuple[int, int]] = {}  # lock identity -> (owning thread id, depth)
_held_guard = threading.Lock()


@dataclass(frozen=True)
class LockHolder:
    """Who holds the migration lock, as far as a waiter can tell."""

    command: str
    pid: int
    host: str
    since: str

    def describe(self) -> str:
        """One phrase for messages: "flowdb upgrade (pid 12 on web-1, since 10:02:03 UTC)"."""
        return f"flowdb {self.command} (pid {self.pid} on {self.host}, since {self.since})"


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _me(command: str) -> LockHolder:
    return LockHolder(
        command=command, pid=os.getpid(), host=socket.gethostname(), since=_now_text()
    )


@contextmanager
def migration_lock(
    database: DatabaseUrl, command: str, timeout: float | None = None
) -> Iterator[None]:
    """Hold the migration lock of ``database`` for the duration of the block.

    Re-entrant within a thread: a command that calls another (``reset`` calls
    ``upgrade``) takes the lock once.
    """
    if timeout is None:
        from flowdb.settings import get_settings

        timeout = get_settings().migration_lock_timeout
    identity = _identity(database)
    me = threading.get_ident()
    with _held_guard:
        owner, depth = _held.get(identity, (me, 0))
        reentrant = depth > 0 and owner == me
        if reentrant:
            _held[identity] = (me, depth + 1)
    if reentrant:
        try:
            yield
        finally:
            _release_depth(identity)
        return

    lock = _postgres_lock if not database.is_sqlite else _sqlite_lock
    with lock(database, command, timeout):
        with _held_guard:
            _held[identity] = (me, 1)
        try:
            yield
        finally:
            _release_depth(identity)


def _release_depth(identity: str) -> None:
    with _held_guard:
        owner, depth = _held[identity]
        if depth <= 1:
            del _held[identity]
        else:
            _held[identity] = (owner, depth - 1)


def _identity(database: DatabaseUrl) -> str:
    path = database.sqlite_path
    return str(path) if path is not None else database.redacted()


class _Waiter:
    """Polls for a lock until a deadline, reporting the holder now and then."""

    def __init__(self, database: DatabaseUrl, timeout: float) -> None:
        self.database = database
        self.timeout = timeout
        self.started = time.monotonic()
        self.last_report: float | None = None

    def waited(self) -> float:
        return time.monotonic() - self.started

    def still_waiting(self, holder: LockHolder | None) -> None:
        """Report the holder (first time and every few seconds), or raise on timeout."""
        described = holder.describe() if holder else "another flowdb command"
        if self.waited() >= self.timeout:
            raise MigrationLockTimeoutError(
                f"Timed out after {self.timeout:g} s waiting for the migration lock on "
                f"{self.database.redacted()}, held by {described}; wait for it to finish "
                "or raise FLOWDB_MIGRATION_LOCK_TIMEOUT."
            )
        now = time.monotonic()
        if self.last_report is None or now - self.last_report >= REPORT_EVERY_SECONDS:
            self.last_report = now
            logger.warning(
                "Waiting for the migration lock held by %s",
                described,
                extra={"holder": holder, "waited": self.waited()},
            )


@contextmanager
def _sqlite_lock(database: DatabaseUrl, command: str, timeout: float) -> Iterator[None]:
    path = database.sqlite_path
    if path is None:  # a memory database lives in this process only
        yield
        return
    from filelock import FileLock, Timeout

    from flowdb.database.engines import prepare_sqlite_folder

    prepare_sqlite_folder(database)  # the lock file lives in the database's folder
    _warn_if_network_filesystem(path)
    lock_path = path.with_name(path.name + ".migration-lock")
    holder_path = path.with_name(path.name + ".migration-lock.json")
    lock = FileLock(lock_path, thread_local=False)
    waiter = _Waiter(database, timeout)
    try:
        while True:
            try:
                lock.acquire(timeout=min(POLL_SECONDS * 5, max(timeout - waiter.waited(), 0)))
                break
            except Timeout:
                waiter.still_waiting(_read_holder_file(holder_path))
    except PermissionError as exc:
        raise DatabaseReadOnlyError(
            f"Cannot create the migration lock file {lock_path} ({exc.strerror}); give this "
            "user write access to the database folder."
        ) from None
    try:
        holder_path.write_text(json.dumps(asdict(_me(command))), encoding="utf-8")
        yield
    finally:
        holder_path.unlink(missing_ok=True)
        lock.release()


def _read_holder_file(path: Path) -> LockHolder | None:
    try:
        return LockHolder(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


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


@contextmanager
def _postgres_lock(database: DatabaseUrl, command: str, timeout: float) -> Iterator[None]:
    import sqlalchemy as sa

    from flowdb.database.engines import create_sync_engine

    me = _me(command)
    engine = create_sync_engine(
        database, application_name=f"{_APPLICATION_PREFIX} {command} pid={me.pid} host={me.host}"
    )
    try:
        with engine.connect() as raw_connection:
            connection = raw_connection.execution_options(isolation_level="AUTOCOMMIT")
            try_lock = sa.text("SELECT pg_try_advisory_lock(:key)")
            waiter = _Waiter(database, timeout)
            while not connection.execute(try_lock, {"key": ADVISORY_LOCK_KEY}).scalar():
                waiter.still_waiting(_postgres_holder(connection))
                time.sleep(POLL_SECONDS)
            try:
                yield
            finally:
                connection.execute(
                    sa.text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
    finally:
        engine.dispose()


def _postgres_holder(connection: Any) -> LockHolder | None:
    import sqlalchemy as sa

    row = connection.execute(
        sa.text(
            "SELECT a.application_name, a.pid, a.client_addr, a.query_start "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 "
            "AND l.objid = :key AND l.objsubid = 1"
        ),
        {"key": ADVISORY_LOCK_KEY},
    ).first()
    if row is None:
        return None
    name, backend_pid, client_addr, query_start = row
    fields = dict(part.split("=", 1) for part in str(name).split() if "=" in part)
    words = str(name).split()
    command = words[1] if len(words) > 1 and words[0] == _APPLICATION_PREFIX else "command"
    since = query_start.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if query_start else "?"
    return LockHolder(
        command=command,
        pid=int(fields.get("pid", backend_pid)),
        host=fields.get("host", str(client_addr or "local socket")),
        since=since,
    )

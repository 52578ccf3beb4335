"""SQLite's migration lock: an OS file lock beside the database file.

``filelock`` (``fcntl``) on a file beside the database, released by the kernel when
the holder dies; the holder writes who it is into a second file beside it for waiters
to read. Before the block, the lock waits (reporting it) while another connection
writes the file.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from flowdb.database.dialects.sqlite.connecting import (
    _READ_POLL_SECONDS,
    SqliteConnecting,
    _warn_if_network_filesystem,
)
from flowdb.database.dialects.sqlite.errors import SQLITE_BUSY_CODES, result_code
from flowdb.database.lockinfo import LockHolder, Waiter, me
from flowdb.errors import DatabaseReadOnlyError


class SqliteLocking(SqliteConnecting):
    """The migration lock (the second layer of ``SqliteDialect``)."""

    @contextmanager
    def migration_lock(self, command: str, waiter: Waiter) -> Iterator[None]:
        """A file lock beside the database; its holder described in a JSON file beside it."""
        from filelock import FileLock, Timeout

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
                if result_code(exc) not in SQLITE_BUSY_CODES:
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

"""The migration lock across processes: waiting, naming the holder, surviving a killed holder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.database.locking import migration_lock
from flowdb.database.urls import parse_database_url
from flowdb.errors import MigrationLockTimeoutError


@contextmanager
def lock_holder(url: str, seconds: float = 600) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding the migration lock until the block ends (or it is killed)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.database.lock_holder", str(seconds)],
        env={**os.environ, "FLOWDB_DATABASE_URL": url},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "locked"
        yield process
    finally:
        process.kill()
        process.wait()


def test_waiter_times_out_naming_the_holder(configured: str) -> None:
    database = parse_database_url(configured)
    with lock_holder(configured) as holder:
        started = time.monotonic()
        with (
            pytest.raises(MigrationLockTimeoutError) as caught,
            migration_lock(database, "upgrade", timeout=1),
        ):
            pytest.fail("got a lock that another process holds")
        assert 0.9 <= time.monotonic() - started < 10
    message = str(caught.value)
    assert f"pid {holder.pid}" in message
    assert socket.gethostname() in message
    assert "flowdb upgrade" in message
    assert "FLOWDB_MIGRATION_LOCK_TIMEOUT" in message


def test_cli_shows_the_wait_and_fails_in_one_line(configured: str) -> None:
    with lock_holder(configured) as holder:
        result = subprocess.run(
            [sys.executable, "-m", "flowdb", "database", "upgrade", "-y"],
            env={
                **os.environ,
                "FLOWDB_DATABASE_URL": configured,
                "FLOWDB_MIGRATION_LOCK_TIMEOUT": "1",
            },
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    assert result.returncode != 0
    assert "Waiting for the migration lock held by flowdb upgrade" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1
    assert f"pid {holder.pid}" in errors[0]
    assert "Traceback" not in result.stderr


def test_killed_holder_releases_the_lock(configured: str) -> None:
    database = parse_database_url(configured)
    with lock_holder(configured) as holder:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        with migration_lock(database, "upgrade", timeout=10):
            pass
    alembic_upgrade()  # and the commands take it too, with no manual clean-up


def test_lock_is_reentrant_in_one_thread(configured: str) -> None:
    database = parse_database_url(configured)
    with (
        migration_lock(database, "reset", timeout=1),
        migration_lock(database, "upgrade", timeout=1),
    ):
        alembic_upgrade()

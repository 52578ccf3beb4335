"""The migration lock across processes: waiting, naming the holder, surviving a killed holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.database.locking import migration_lock
from flowdb.database.target import Database
from flowdb.errors import MigrationLockTimeoutError
from flowdb.settings import Settings
from tests.dbtools import (
    create_postgres_database,
    drop_postgres_database,
    holder_description,
    lock_holder,
)


def waiting_up_to(url: str, seconds: float) -> Database:
    """The database at ``url``, whose lock waits give up after ``seconds``."""
    return Database.from_url(url, Settings(migration_lock_timeout=seconds))


def test_waiter_times_out_naming_the_holder(configured: str) -> None:
    with lock_holder(configured) as holder:
        started = time.monotonic()
        with (
            pytest.raises(MigrationLockTimeoutError) as caught,
            migration_lock(waiting_up_to(configured, 1), "upgrade"),
        ):
            pytest.fail("got a lock that another process holds")
        assert 0.9 <= time.monotonic() - started < 10
        described = holder_description(configured, holder)
    message = str(caught.value)
    assert f"held by {described}" in message
    assert "FLOWDB_MIGRATION_LOCK_TIMEOUT" in message


def test_cli_shows_the_wait_and_fails_in_one_line(configured: str) -> None:
    with lock_holder(configured) as holder:
        described = holder_description(configured, holder)
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
    assert f"Waiting for the migration lock held by {described}" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1
    assert f"held by {described}" in errors[0]
    assert "Traceback" not in result.stderr


def test_killed_holder_releases_the_lock(configured: str) -> None:
    with lock_holder(configured) as holder:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        with migration_lock(waiting_up_to(configured, 10), "upgrade"):
            pass
    alembic_upgrade()  # and the commands take it too, with no manual clean-up


def test_lock_is_reentrant_in_one_thread(configured: str) -> None:
    with (
        migration_lock(waiting_up_to(configured, 1), "reset"),
        migration_lock(waiting_up_to(configured, 1), "upgrade"),
    ):
        alembic_upgrade()


def test_a_waiter_names_the_holder_of_its_own_database(postgres_url: str) -> None:
    # Advisory locks are per database: a flowdb lock held in another database on the
    # same server neither blocks this one nor is named as its holder.
    other = create_postgres_database()
    try:
        with lock_holder(other) as elsewhere, lock_holder(postgres_url) as here:
            with (
                pytest.raises(MigrationLockTimeoutError) as caught,
                migration_lock(waiting_up_to(postgres_url, 1), "upgrade"),
            ):
                pytest.fail("got a lock that another process holds")
            message = str(caught.value)
            assert f"pid {here.pid}" in message
            assert f"pid {elsewhere.pid}" not in message
            with (
                pytest.raises(MigrationLockTimeoutError) as caught,
                migration_lock(waiting_up_to(other, 1), "upgrade"),
            ):
                pytest.fail("got a lock that another process holds")
            assert f"pid {elsewhere.pid}" in str(caught.value)
    finally:
        drop_postgres_database(other)


def test_a_quick_look_tells_whether_a_migration_is_running(configured: str) -> None:
    database = Database.from_url(configured)
    assert database.migration_running() is None
    with lock_holder(configured) as holder:
        running = database.migration_running()
        assert running is not None
        assert running.describe().startswith(holder_description(configured, holder))
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        # A dead holder holds nothing (PostgreSQL ends its session as the socket closes).
        deadline = time.monotonic() + 10
        while database.migration_running() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert database.migration_running() is None

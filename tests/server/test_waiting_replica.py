"""A replica that does not migrate (``FLOWDB_MIGRATE_ON_START=false``) listens while it waits.

Real server processes on real databases: the replica answers its probes from its first
seconds, says how far the migration job got, keeps waiting while the job holds the lock
(past ``FLOWDB_SCHEMA_WAIT_TIMEOUT``), serves once the schema is at head without a
restart, and ends with one line when nothing moves for that long.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.database.history import load_history
from flowdb.errors import ExitCode
from tests import web
from tests.dbtools import revision_of, set_revision
from tests.server.test_start import free_port, start_server


def first_answer(
    port: int, process: subprocess.Popen[str], path: str, within: float
) -> httpx.Response:
    """The first HTTP answer on ``path``, polled every 50 ms for ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        assert process.poll() is None, f"server exited with {process.returncode}"
        try:
            return web.get(f"http://127.0.0.1:{port}{path}", timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def until(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_replica_listens_while_a_migration_job_runs_then_serves(configured: str) -> None:
    history = load_history()
    alembic_upgrade()
    set_revision(configured, history.revisions[-2].id)  # the job's last migration runs
    job = subprocess.Popen(
        [sys.executable, "-m", "tests.server.slow_migration", "20", "5000"],
        env={**os.environ, "FLOWDB_DATABASE_URL": configured},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    port = free_port()
    replica: subprocess.Popen[str] | None = None
    try:
        assert job.stdin is not None and job.stdout is not None
        assert job.stdout.readline().strip() == "locked"
        time.sleep(0.5)  # the job records its first progress
        started = time.monotonic()
        replica = start_server(
            configured, port, FLOWDB_MIGRATE_ON_START="false", FLOWDB_SCHEMA_WAIT_TIMEOUT="1.5"
        )
        health = first_answer(port, replica, "/api/health", within=60)
        first = time.monotonic() - started
        ready = web.get(f"http://127.0.0.1:{port}/api/ready", timeout=5)
        print(f"first answer {first:.2f} s after the start")
        assert health.status_code == 200
        # Ordering, not wall-clock time (the machine is shared): the replica answered its
        # probes while the job still migrated, not once the schema reached head.
        assert job.poll() is None, f"the replica answered only after the job ({first:.2f} s)"
        assert ready.status_code == 503
        assert ready.headers["retry-after"] == "5"
        waiting = ready.json()["waiting"]
        migration = waiting["migration"]
        assert migration["revision"] == history.head
        assert migration["phase"] == "backfill"
        assert migration["rows_total"] == 5000
        assert 0 < migration["rows_done"] < 5000
        assert waiting["lock_holder"].startswith(("flowdb upgrade (pid", "server connection"))
        assert "of 5,000 rows" in ready.json()["detail"]

        flows = web.get(f"http://127.0.0.1:{port}/api/flows", timeout=5)
        assert flows.status_code == 503
        assert flows.headers["retry-after"] == "5"
        assert flows.json()["detail"].startswith("Not ready: waiting for the schema")

        # Past FLOWDB_SCHEMA_WAIT_TIMEOUT the job still holds the lock: the replica waits,
        # and once two looks saw the rows move it estimates the time left.
        time.sleep(2)  # past the 1.5 s timeout; four looks (every 0.5 s) at the rows
        assert replica.poll() is None, "the replica gave up while the migration ran"
        later = web.get(f"http://127.0.0.1:{port}/api/ready", timeout=5).json()["waiting"]
        assert later["migration"]["rows_done"] > migration["rows_done"]
        assert later["migration"]["seconds_left"] is not None
        assert 0 < later["migration"]["seconds_left"] < 30

        # Seen all it needed of the job part way: it ends now (head, lock released), not
        # at the end of its 20 s (room for a slow start on a loaded machine); the replica
        # notices without a restart.
        assert job.poll() is None, "the job ended before the replica's wait was seen"
        job.stdin.write("finish\n")
        job.stdin.flush()
        assert job.wait(timeout=60) == 0
        until(
            lambda: web.get(f"http://127.0.0.1:{port}/api/ready", timeout=5).status_code == 200,
            within=15,
        )
        created = web.post(f"http://127.0.0.1:{port}/api/flows", json={"name": "etl"}, timeout=5)
        assert created.status_code == 201, created.text
        assert replica.poll() is None  # the same process: no restart
    finally:
        if job.poll() is None:
            job.kill()
        job.wait()
        if replica is not None and replica.poll() is None:
            replica.send_signal(signal.SIGINT)
        if replica is not None:
            _, stderr = replica.communicate(timeout=30)
            assert "Traceback" not in stderr
    assert "Waiting for the schema: at " in stderr
    assert "of 5,000 rows" in stderr
    assert f"The schema is at head {history.head}; serving." in stderr
    assert revision_of(configured) == history.head


def test_a_replica_gives_up_when_nothing_moves(configured: str) -> None:
    # Behind by an expand revision: behind by contracts only, it would serve (fleet).
    behind = load_history().revisions[-3].id
    count = len(load_history().pending(behind))
    alembic_upgrade(behind)
    port = free_port()
    started = time.monotonic()
    replica = start_server(
        configured, port, FLOWDB_MIGRATE_ON_START="false", FLOWDB_SCHEMA_WAIT_TIMEOUT="3"
    )
    try:
        assert first_answer(port, replica, "/api/health", within=60).status_code == 200
        ready = web.get(f"http://127.0.0.1:{port}/api/ready", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["waiting"]["lock_holder"] is None
        _, stderr = replica.communicate(timeout=60)
    finally:
        if replica.poll() is None:
            replica.kill()
            replica.communicate()
    elapsed = time.monotonic() - started
    assert 3 <= elapsed < 30
    assert replica.returncode == ExitCode.REFUSED
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: The database at "), stderr
    assert f"{count} migration(s) behind" in last
    assert "no migration ran or progressed for 3 s" in last
    assert "flowdb database upgrade -y" in last
    assert stderr.count("Error: ") == 1
    assert "Traceback" not in stderr
    assert revision_of(configured) == behind

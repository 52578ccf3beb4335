"""Real server processes across a rolling upgrade: the previous release and this one.

The previous release (the commit this branch started from, whose head is 7b5e9c2f4d3a)
serves the database through its own API while this release's server starts with
migrate-on-start: the start applies the expand revision only (8d2e4f6a1c35) and both
serve the same runs, the previous one reading and writing flow_run.end_time, this one
ended_at, kept in step by the triggers. Once the previous server stops, this one runs
the contract (9e3f5a7b2d46) by itself, once. A clean stop removes its heartbeat row.

The previous release writes no heartbeat: on PostgreSQL its sessions
(``application_name = 'flowdb-server'``) say it serves; on SQLite and MariaDB nothing
can, so the test writes the row it would have written.

And in one process: a stop that arrives during a beat waits for it before removing the row.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from flowdb.database import bookkeeping, fleet
from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.database.history import load_history
from flowdb.database.target import Database
from tests import web
from tests.database.test_fleet import CONTRACT, EXPAND, OLD_HEAD, older_replica, upgrade_runs
from tests.database.test_releases import release_python
from tests.dbtools import revision_of, sync_engine
from tests.server.test_start import free_port, start_server, wait_until_ready

#: The commit this release started from: the previous release's code (head 7b5e9c2f4d3a).
PREVIOUS = "d43db95"


def replica_rows(url: str) -> list[tuple[str, str | None, int]]:
    with sync_engine(url).connect() as connection:
        rows = connection.execute(
            sa.text(f"SELECT id, head_revision, pid FROM {bookkeeping.REPLICA_TABLE}")
        ).all()
    return [(str(r[0]), r[1], int(r[2])) for r in rows]


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def previous_server(url: str, port: int) -> subprocess.Popen[str]:
    python = release_python(PREVIOUS)
    return subprocess.Popen(
        [str(python), "-m", "flowdb", "server", "start", "--port", str(port)],
        env={
            **os.environ,
            "FLOWDB_DATABASE_URL": url,
            "FLOWDB_MIGRATE_ON_START": "false",
            "PYTHONUNBUFFERED": "1",
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def finish_run(base: str, run_id: str) -> str:
    for state in ("RUNNING", "COMPLETED"):
        answer = web.post(f"{base}/api/flow_runs/{run_id}/set_state", json={"type": state})
        assert answer.status_code in (200, 201), answer.text
    end = web.get(f"{base}/api/flow_runs/{run_id}").json()["end_time"]
    assert end is not None
    return str(end)


@pytest.mark.slow
def test_both_releases_serve_across_the_expand_and_the_last_new_replica_contracts(
    configured: str,
) -> None:
    head = load_history().head
    alembic_upgrade(OLD_HEAD)
    old_port, new_port = free_port(), free_port()
    old_base, new_base = f"http://127.0.0.1:{old_port}", f"http://127.0.0.1:{new_port}"
    old = previous_server(configured, old_port)
    new: subprocess.Popen[str] | None = None
    stand_in = None
    try:
        wait_until_ready(old_port, old)
        if not configured.startswith("postgresql"):
            stand_in = older_replica(configured)  # the row the previous release cannot write
        flow = web.post(f"{old_base}/api/flows", json={"name": "etl"}).json()
        run_a = web.post(f"{old_base}/api/flow_runs", json={"flow_id": flow["id"]}).json()

        new = start_server(configured, new_port, FLOWDB_SERVER_HEARTBEAT_INTERVAL="0.3")
        wait_until_ready(new_port, new)
        assert revision_of(configured) == EXPAND  # the start stopped before the contract
        ready = web.get(f"{new_base}/api/ready").json()
        assert CONTRACT in str(ready), ready
        assert web.get(f"{old_base}/api/ready").status_code == 200  # the old one too

        # The previous release writes end_time; this one reads it as ended_at.
        end_a = finish_run(old_base, run_a["id"])
        assert web.get(f"{new_base}/api/flow_runs/{run_a['id']}").json()["end_time"] == end_a
        # This release writes ended_at; the previous one reads it as end_time.
        run_b = web.post(f"{new_base}/api/flow_runs", json={"flow_id": flow["id"]}).json()
        end_b = finish_run(new_base, run_b["id"])
        assert web.get(f"{old_base}/api/flow_runs/{run_b['id']}").json()["end_time"] == end_b

        mine = [
            row for row in replica_rows(configured) if stand_in is None or row[0] != stand_in.id
        ]
        assert [(h, p) for _, h, p in mine] == [(head, new.pid)]
        time.sleep(1.0)  # three beats: the previous release still holds the contract
        assert revision_of(configured) == EXPAND

        stop(old)  # the previous release is gone
        if stand_in is not None:
            fleet.leave(Database.from_url(configured), stand_in)
        wait_for(lambda: revision_of(configured) == head)
        assert upgrade_runs(configured, CONTRACT) == 1
        assert web.get(f"{new_base}/api/ready").status_code == 200
        assert web.get(f"{new_base}/api/flow_runs/{run_a['id']}").json()["end_time"] == end_a
    finally:
        stop(old)
        if new is not None:
            stop(new)
    assert new.returncode == 130, new.stderr.read() if new.stderr else ""  # SIGINT: a clean stop
    assert replica_rows(configured) == []  # a clean stop removes its row


def test_a_stop_during_a_beat_waits_for_it_and_leaves_no_row(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A beat in flight when the server stops finishes first; then the row is removed.

    A cancelled beat's thread went on and wrote the row back after the removal: the
    stopped replica was listed as serving until its row went stale.
    """
    from flowdb.server.heartbeat import Heartbeat

    monkeypatch.setenv("FLOWDB_SERVER_HEARTBEAT_INTERVAL", "0.05")
    in_flight = threading.Event()
    real_beat = fleet.beat

    def slow_beat(database: Database, replica: fleet.Replica) -> fleet.Replica:
        in_flight.set()
        time.sleep(0.3)  # the stop arrives before this beat writes
        return real_beat(database, replica)

    async def scenario() -> None:
        heartbeat = Heartbeat(Database.from_url(configured))
        await heartbeat.start()  # the first beat, at full speed
        assert len(replica_rows(configured)) == 1
        monkeypatch.setattr(fleet, "beat", slow_beat)
        await asyncio.to_thread(in_flight.wait, 30)
        await heartbeat.stop()

    asyncio.run(scenario())
    time.sleep(0.4)  # long enough for an abandoned beat to have written
    assert replica_rows(configured) == []

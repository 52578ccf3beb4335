"""Real server processes: the replica's heartbeat, and the contract it runs when it is the last.

A server of this release starts on a database at the previous release's head while a
replica of that release still serves (its heartbeat row): the start applies the expand
revision only, the server is ready on the expanded schema, and once the older replica
is gone the server runs the waiting contract by itself. A clean stop removes its row.
"""

from __future__ import annotations

import signal
import time

import httpx
import sqlalchemy as sa

from flowdb.database import bookkeeping, fleet
from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.database.history import load_history
from flowdb.database.target import Database
from tests.database.test_fleet import CONTRACT, EXPAND, OLD_HEAD, older_replica, upgrade_runs
from tests.dbtools import revision_of, sync_engine
from tests.server.test_start import free_port, start_server, wait_until_ready


def replica_rows(url: str) -> list[tuple[str, str | None, int]]:
    with sync_engine(url).connect() as connection:
        rows = connection.execute(
            sa.text(f"SELECT id, head_revision, pid FROM {bookkeeping.REPLICA_TABLE}")
        ).all()
    return [(str(r[0]), r[1], int(r[2])) for r in rows]


def wait_for(condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_a_new_replica_serves_the_expand_then_runs_the_contract_when_alone(
    configured: str,
) -> None:
    head = load_history().head
    alembic_upgrade(OLD_HEAD)
    older = older_replica(configured)
    port = free_port()
    server = start_server(
        configured,
        port,
        FLOWDB_SERVER_HEARTBEAT_INTERVAL="0.3",
        FLOWDB_SERVER_HEARTBEAT_STALE="30",
    )
    try:
        started = time.monotonic()
        wait_until_ready(port, server)
        print("ready after", time.monotonic() - started)
        if revision_of(configured) != EXPAND:
            server.send_signal(signal.SIGINT)
            print(server.communicate(timeout=30))
        assert revision_of(configured) == EXPAND  # the start stopped before the contract
        ready = httpx.get(f"http://127.0.0.1:{port}/api/ready", timeout=5).json()
        assert CONTRACT in str(ready), ready
        flow = httpx.post(f"http://127.0.0.1:{port}/api/flows", json={"name": "etl"}, timeout=10)
        assert flow.status_code == 201  # it serves on the expanded schema
        mine = [row for row in replica_rows(configured) if row[0] != older.id]
        assert [(h, p) for _, h, p in mine] == [(head, server.pid)]
        time.sleep(1.5)  # several beats: the older replica still holds the contract
        assert revision_of(configured) == EXPAND

        fleet.leave(Database.from_url(configured), older)  # the older replica stops
        wait_for(lambda: revision_of(configured) == head)
        assert upgrade_runs(configured, CONTRACT) == 1
        assert httpx.get(f"http://127.0.0.1:{port}/api/ready", timeout=5).status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert server.returncode == 0, server.stderr.read() if server.stderr else ""
    assert replica_rows(configured) == []  # a clean stop removes its row

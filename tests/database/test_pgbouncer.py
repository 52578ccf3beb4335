"""PostgreSQL behind a real PgBouncer in transaction pooling mode.

A session advisory lock does not hold there (each transaction may get another server
connection): flowdb takes the same lock at transaction level in a transaction it keeps
open (``FLOWDB_DATABASE_POOL_MODE=transaction``). Left at ``session`` by mistake, flowdb
notices a lock another client left on its pooled server session and refuses in one line.
"""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from flowdb.database.history import load_history
from flowdb.database.target import Database
from tests.dbtools import revision_of, schema_snapshot, upgrades_at_once


def _upgrade_processes(url: str, count: int) -> list[tuple[int, str]]:
    results = upgrades_at_once(url, count, FLOWDB_DATABASE_POOL_MODE="transaction")
    return [(code, out + err) for code, out, err in results]


@pytest.mark.slow
def test_8_processes_through_pgbouncer_exactly_one_migrates(
    pgbouncer_url: str, pgbouncer_direct_url: str
) -> None:
    results = _upgrade_processes(pgbouncer_url, 8)
    assert [code for code, _ in results] == [0] * 8, results
    history = load_history()
    migrators = [output for _, output in results if "↑" in output]
    assert len(migrators) == 1
    assert migrators[0].count("↑") == len(history.revisions)
    assert sum("Nothing to upgrade" in output for _, output in results) == 7
    assert revision_of(pgbouncer_direct_url) == history.head


def test_through_pgbouncer_the_schema_is_the_direct_one(
    pgbouncer_url: str, pgbouncer_direct_url: str
) -> None:
    from tests.dbtools import create_postgres_database, drop_postgres_database

    [(code, output)] = _upgrade_processes(pgbouncer_url, 1)
    assert code == 0, output
    direct = create_postgres_database()
    try:
        [(code, output)] = _upgrade_processes_direct(direct)
        assert code == 0, output
        assert schema_snapshot(pgbouncer_direct_url) == schema_snapshot(direct)
    finally:
        drop_postgres_database(direct)


def _upgrade_processes_direct(url: str) -> list[tuple[int, str]]:
    results = upgrades_at_once(url, 1, FLOWDB_DATABASE_POOL_MODE="session")
    return [(code, out + err) for code, out, err in results]


def test_a_pooled_holder_is_named_and_excludes_a_direct_command(
    pgbouncer_url: str, pgbouncer_direct_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction-level lock and the direct session lock are one lock."""
    from flowdb.errors import MigrationLockTimeoutError

    pooled = Database.from_url(pgbouncer_url)
    with pooled.lock("upgrade"):
        holder = Database.from_url(pgbouncer_direct_url).migration_running()
        assert holder is not None and holder.pid == os.getpid()
        monkeypatch.setenv("FLOWDB_MIGRATION_LOCK_TIMEOUT", "0.5")
        monkeypatch.setenv("FLOWDB_DATABASE_POOL_MODE", "session")
        direct = Database.from_url(pgbouncer_direct_url)
        # Another thread: the lock is re-entrant within this one.
        from tests.dbtools import run_in_threads_at_once

        def take() -> None:
            with direct.lock("upgrade"):
                pass

        errors = run_in_threads_at_once(take, 1)
        assert len(errors) == 1 and isinstance(errors[0], MigrationLockTimeoutError)
        assert "pid" in str(errors[0])
    assert Database.from_url(pgbouncer_direct_url).migration_running() is None


def test_no_session_state_is_left_on_pooled_server_connections(pgbouncer_url: str) -> None:
    """After a pooled upgrade no server connection keeps a lock or a changed setting."""
    [(code, output)] = _upgrade_processes(pgbouncer_url, 1)
    assert code == 0, output
    engine = sa.create_engine(
        Database.from_url(pgbouncer_url).dialect.sync_url,
        poolclass=sa.pool.NullPool,
        connect_args={"prepare_threshold": None},
    )
    try:
        with engine.connect() as connection:
            for _ in range(30):  # many transactions, spread over the pool's connections
                row = connection.execute(
                    sa.text(
                        "SELECT current_setting('lock_timeout'), "
                        "current_setting('statement_timeout'), "
                        "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database()))"
                    )
                ).one()
                assert tuple(row) == ("0", "0", 0)
                connection.rollback()
    finally:
        engine.dispose()


def test_the_api_routes_through_pgbouncer(
    pgbouncer_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server on asyncpg through the pooler: no cached statements, no session state."""
    from fastapi.testclient import TestClient

    from flowdb.server.app import create_app

    monkeypatch.setenv("FLOWDB_DATABASE_URL", pgbouncer_url)
    monkeypatch.setenv("FLOWDB_SERVER_ADMIN_ROUTES", "true")
    with TestClient(create_app(), raise_server_exceptions=False) as api:
        assert api.get("/api/health").status_code == 200
        head = load_history().head
        assert api.get("/api/ready").json() == {
            "status": "ready",
            "schema_revision": head,
            "head": head,
            "detail": "",
        }
        flows = [api.post("/api/flows", json={"name": f"f{n}"}).json() for n in range(3)]
        assert api.post("/api/flows", json={"name": "f0"}).status_code == 409
        # Many transactions: each may run on another server connection of the pool.
        for _ in range(3):
            listed = api.get("/api/flows").json()
            assert sorted(flow["name"] for flow in listed) == ["f0", "f1", "f2"]
        run = api.post("/api/flow_runs", json={"flow_id": flows[0]["id"], "name": "r"}).json()
        response = api.post(f"/api/flow_runs/{run['id']}/set_state", json={"type": "RUNNING"})
        assert response.status_code == 201, response.text
        assert api.get(f"/api/flow_runs/{run['id']}").json()["state_type"] == "RUNNING"
        states = api.get(f"/api/flow_runs/{run['id']}/states").json()
        assert [state["type"] for state in states] == ["RUNNING"]
        task = {"flow_run_id": run["id"], "task_key": "t", "name": "t"}
        assert api.post("/api/task_runs", json=task).status_code == 201
        line = {
            "name": "flow",
            "level": 20,
            "message": "hello",
            "timestamp": "2026-03-01T12:00:00Z",
            "flow_run_id": run["id"],
        }
        assert api.post("/api/logs", json=[line, line]).status_code == 201
        assert len(api.get(f"/api/logs?flow_run_id={run['id']}").json()) == 2
        assert api.post("/api/admin/database/clear").status_code == 200
        assert api.get("/api/flows").json() == []


def test_a_transaction_pooler_left_unconfigured_is_refused_in_one_line(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Session mode through a transaction pooler: the holder's lock stays on the pooled
    server session; the next command there must not take it again (it is re-entrant)."""
    import subprocess
    import sys

    from flowdb.errors import ExitCode
    from tests.dbtools import ADMIN_URL, lock_holder
    from tests.pgbouncer import running_pgbouncer, through

    monkeypatch.setenv("FLOWDB_DATABASE_POOL_MODE", "session")
    monkeypatch.setenv("FLOWDB_MIGRATION_LOCK_TIMEOUT", "5")
    # One server connection: every statement of both processes runs on it. The pooler
    # ignores the options parameter (otherwise it refuses session mode at once: below).
    with running_pgbouncer(ADMIN_URL, pool_size=1, ignored="options") as port:
        url = through(port, postgres_url)
        with lock_holder(url):
            result = subprocess.run(
                [sys.executable, "-m", "flowdb", "database", "upgrade", "-y"],
                env={**os.environ, "FLOWDB_DATABASE_URL": url},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
            )
    assert result.returncode == ExitCode.USAGE, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: The migration lock does not hold on "), result.stderr
    assert "FLOWDB_DATABASE_POOL_MODE=transaction" in lines[-1]
    assert "Traceback" not in result.stderr
    assert revision_of(postgres_url) is None


def test_session_mode_through_a_pooler_that_refuses_options_says_what_to_set(
    postgres_url: str, pgbouncer_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from flowdb.errors import ExitCode
    from tests.pgbouncer import through

    url = through(pgbouncer_port, postgres_url)
    result = subprocess.run(
        [sys.executable, "-m", "flowdb", "database", "upgrade", "-y"],
        env={**os.environ, "FLOWDB_DATABASE_URL": url, "FLOWDB_DATABASE_POOL_MODE": "session"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == ExitCode.USAGE, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: A pooler in front of "), result.stderr
    assert "FLOWDB_DATABASE_POOL_MODE=transaction" in last
    assert revision_of(postgres_url) is None

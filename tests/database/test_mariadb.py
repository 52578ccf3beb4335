"""MariaDB as flowdb's third dialect, against the machine's server (root@127.0.0.1:3306).

The same history files as SQLite and PostgreSQL: empty to head, head to base and back,
``check`` against the models, the SQL preview, the lock (``GET_LOCK``) and its holder,
and the one-line errors of bad URLs and unsuitable databases.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import sqlalchemy as sa

from flowdb.database.bookkeeping import CREATE_PROGRESS
from flowdb.database.history import load_history
from flowdb.database.status import PROGRESS_TABLE
from flowdb.database.target import Database
from flowdb.errors import (
    DatabaseUnreachableError,
    MigrationLockTimeoutError,
    UnsupportedServerError,
)
from tests.cli.helpers import flowdb
from tests.dbtools import (
    create_mariadb_database,
    drop_mariadb_database,
    lock_connection,
    revision_of,
    run_in_threads_at_once,
    schema_snapshot,
    sync_engine,
    upgrades_at_once,
)

HEAD = load_history().head


def test_upgrade_check_downgrade_and_upgrade_again(mariadb_url: str) -> None:
    result = flowdb(mariadb_url, "database", "upgrade", "-y")
    assert result.returncode == 0, result.stderr
    assert revision_of(mariadb_url) == HEAD
    first = schema_snapshot(mariadb_url)
    check = flowdb(mariadb_url, "database", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "matches the models" in check.stdout + check.stderr
    down = flowdb(mariadb_url, "database", "downgrade", "-y", "-r", "base")
    assert down.returncode == 0, down.stderr
    assert revision_of(mariadb_url) is None or revision_of(mariadb_url) == ""
    again = flowdb(mariadb_url, "database", "upgrade", "-y")
    assert again.returncode == 0, again.stderr
    assert schema_snapshot(mariadb_url) == first


def test_reset_and_stamp(mariadb_url: str) -> None:
    assert flowdb(mariadb_url, "database", "upgrade", "-y").returncode == 0
    reset = flowdb(mariadb_url, "database", "reset", "-y")
    assert reset.returncode == 0, reset.stderr
    assert revision_of(mariadb_url) == HEAD
    stamp = flowdb(mariadb_url, "database", "stamp", "-y", "c5d8e3f2a9b1")
    assert stamp.returncode == 0, stamp.stderr
    assert revision_of(mariadb_url) == "c5d8e3f2a9b1"


def test_current_history_and_dry_run(mariadb_url: str) -> None:
    current = flowdb(mariadb_url, "database", "current")
    assert current.returncode == 0, current.stderr
    assert "empty database" in current.stdout
    preview = flowdb(mariadb_url, "database", "upgrade", "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert re.search(r'CREATE TABLE (IF NOT EXISTS )?"?flow"? \(', preview.stdout)
    assert "ENGINE" not in preview.stderr
    assert revision_of(mariadb_url) is None  # a preview writes nothing
    history = flowdb(mariadb_url, "database", "history")
    assert history.returncode == 0 and HEAD in history.stdout


def test_the_tables_are_utf8mb4_and_keep_any_text(mariadb_url: str) -> None:
    assert flowdb(mariadb_url, "database", "upgrade", "-y").returncode == 0
    engine = sa.create_engine(Database.from_url(mariadb_url).dialect.sync_url)
    try:
        with engine.begin() as connection:
            charsets = set(
                connection.execute(
                    sa.text(
                        "SELECT DISTINCT character_set_name FROM information_schema.columns "
                        "WHERE table_schema = DATABASE() AND character_set_name IS NOT NULL"
                    )
                ).scalars()
            )
            assert charsets == {"utf8mb4"}
            connection.execute(
                sa.text("INSERT INTO flow (id, name) VALUES (:id, :name)"),
                {"id": "0" * 32, "name": "données 🚀"},
            )
            assert connection.execute(sa.text("SELECT name FROM flow")).scalar() == "données 🚀"
    finally:
        engine.dispose()


def test_the_lock_names_its_holder_from_the_process_list(
    mariadb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = Database.from_url(mariadb_url)
    with database.lock("upgrade"):
        holder = Database.from_url(mariadb_url).migration_running()
        # The server's id of the lock's connection, its client address; no pid (not known).
        assert holder is not None and holder.pid is None
        assert holder.connection == lock_connection(mariadb_url)
        assert holder.host.startswith("127.0.0.1:")
        monkeypatch.setenv("FLOWDB_MIGRATION_LOCK_TIMEOUT", "0.5")
        other = Database.from_url(mariadb_url)

        def take() -> None:
            with other.lock("upgrade"):
                pass

        errors = run_in_threads_at_once(take, 1)
        assert len(errors) == 1 and isinstance(errors[0], MigrationLockTimeoutError)
        # Named neutrally: nothing the server shows says the holder is flowdb's.
        assert f"held by server connection {holder.connection} " in str(errors[0])
        assert f"(client {holder.host}, last statement " in str(errors[0])
    assert Database.from_url(mariadb_url).migration_running() is None


def test_the_status_reads_again_when_a_table_it_listed_is_dropped_meanwhile(
    mariadb_url: str,
) -> None:
    # A migration drops flowdb_migration_progress as it finishes, and DDL commits at once:
    # between listing the tables and reading that one, it may be gone.
    engine = sync_engine(mariadb_url)
    with engine.begin() as connection:
        connection.execute(sa.text(CREATE_PROGRESS))
    dropped: list[str] = []

    def drop_before_the_first_read(
        _connection: object, _cursor: object, statement: str, *_: object
    ) -> None:
        if f"FROM {PROGRESS_TABLE}" in statement and not dropped:
            dropped.append(statement)
            with engine.begin() as other:
                other.execute(sa.text("SET SESSION lock_wait_timeout = 5"))
                other.execute(sa.text(f"DROP TABLE {PROGRESS_TABLE}"))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", drop_before_the_first_read)
    try:
        status = Database.from_url(mariadb_url).status()
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", drop_before_the_first_read)
        engine.dispose()
    assert dropped, "the progress table was never read"
    assert status.owner == "empty" and status.in_progress == ()
    assert PROGRESS_TABLE not in status.tables


def test_a_view_is_not_a_table_of_the_status(mariadb_url: str) -> None:
    # As on PostgreSQL (pg_tables) and SQLite (type 'table'): the catalog lists tables.
    engine = sync_engine(mariadb_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE VIEW flow AS SELECT 1 AS id"))
    finally:
        engine.dispose()
    status = Database.from_url(mariadb_url).status()
    assert status.tables == frozenset() and status.owner == "empty"


def test_a_dead_holders_lock_is_released_by_the_server(mariadb_url: str) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from flowdb.database.target import Database\n"
            "with Database.from_url(sys.argv[1]).lock('upgrade'):\n"
            "    print('held', flush=True); time.sleep(60)",
            mariadb_url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert Database.from_url(mariadb_url).migration_running() is not None
    finally:
        holder.kill()
        holder.wait()
    result = flowdb(mariadb_url, "database", "upgrade", "-y")
    assert result.returncode == 0, result.stderr
    assert revision_of(mariadb_url) == HEAD


def test_8_processes_exactly_one_migrates(mariadb_url: str) -> None:
    results = upgrades_at_once(mariadb_url, 8)
    assert [code for code, _, _ in results] == [0] * 8, results
    outputs = [(out, err) for _, out, err in results]
    migrators = [err for _, err in outputs if "↑" in err]
    assert len(migrators) == 1
    assert migrators[0].count("↑") == len(load_history().revisions)
    assert revision_of(mariadb_url) == HEAD


@pytest.mark.parametrize(
    ("raw", "backend", "sync", "async_"),
    [
        ("mysql://u@h/db", "mysql", "mysql+pymysql", "mysql+aiomysql"),
        ("mysql+pymysql://u@h/db", "mysql", "mysql+pymysql", "mysql+aiomysql"),
        ("mariadb://u@h/db", "mariadb", "mariadb+pymysql", "mariadb+aiomysql"),
        ("mariadb+pymysql://u@h/db", "mariadb", "mariadb+pymysql", "mariadb+aiomysql"),
        ("mariadb+aiomysql://u@h/db", "mariadb", "mariadb+pymysql", "mariadb+aiomysql"),
    ],
)
def test_url_forms(raw: str, backend: str, sync: str, async_: str) -> None:
    dialect = Database.from_url(raw).dialect
    assert dialect.name == backend
    assert dialect.sync_url.drivername == sync
    assert dialect.async_url.drivername == async_
    assert dialect.sync_url.query["charset"] == "utf8mb4"


def test_the_password_is_redacted() -> None:
    database = Database.from_url("mariadb://root:s3cret@127.0.0.1:3306/flowdb")
    assert "s3cret" not in database.describe()


def test_a_wrong_password_is_one_line_without_it(mariadb_url: str) -> None:
    url = sa.make_url(mariadb_url).set(password="s3cret").render_as_string(hide_password=False)
    with pytest.raises(DatabaseUnreachableError) as caught:
        Database.from_url(url).status()
    message = str(caught.value)
    assert "s3cret" not in message and "\n" not in message
    assert "wrong user or password" in message


def test_an_unknown_database_is_one_line(mariadb_url: str) -> None:
    url = sa.make_url(mariadb_url).set(database="flowdb_no_such_database")
    with pytest.raises(DatabaseUnreachableError, match="unknown database"):
        Database.from_url(url.render_as_string(hide_password=False)).status()


def test_a_database_that_is_not_utf8mb4_is_refused_saying_what_is_needed() -> None:
    url = create_mariadb_database(charset="latin1")
    try:
        result = flowdb(url, "database", "upgrade", "-y")
        assert result.returncode == UnsupportedServerError.exit_code
        assert "utf8mb4" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert revision_of(url) is None
    finally:
        drop_mariadb_database(url)


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        ("10.11.19-MariaDB-0+deb12u1", ""),
        ("10.7.1-MariaDB", ""),
        ("10.6.17-MariaDB", "MariaDB 10.6.17-MariaDB"),  # no native uuid type before 10.7
        ("10.5.22-MariaDB", "MariaDB 10.5.22-MariaDB"),
        ("8.0.36", ""),
        ("5.7.44-log", "MySQL 5.7.44-log"),
    ],
)
def test_servers_too_old_are_named(version: str, problem: str) -> None:
    from flowdb.database.dialects.mysql import server_problem

    assert server_problem(version) == problem


def test_the_api_routes_on_mariadb(mariadb_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from flowdb.server.app import create_app

    monkeypatch.setenv("FLOWDB_DATABASE_URL", mariadb_url)
    monkeypatch.setenv("FLOWDB_SERVER_ADMIN_ROUTES", "true")
    with TestClient(create_app(), raise_server_exceptions=False) as api:
        assert api.get("/api/ready").json()["schema_revision"] == HEAD
        flow = api.post("/api/flows", json={"name": "etl 🚀", "tags": ["a"]}).json()
        assert api.post("/api/flows", json={"name": "etl 🚀"}).status_code == 409
        assert api.get(f"/api/flows/{flow['id']}").json()["name"] == "etl 🚀"
        run = api.post(
            "/api/flow_runs",
            json={"flow_id": flow["id"], "parameters": {"x": 1}, "state": {"type": "SCHEDULED"}},
        ).json()
        running = api.post(f"/api/flow_runs/{run['id']}/set_state", json={"type": "RUNNING"})
        assert running.status_code == 201, running.text
        current = api.get(f"/api/flow_runs/{run['id']}").json()
        assert current["state_type"] == "RUNNING"
        assert current["parameters"] == {"x": 1}
        assert current["start_time"] == running.json()["timestamp"]
        states = api.get(f"/api/flow_runs/{run['id']}/states").json()
        assert [state["type"] for state in states] == ["SCHEDULED", "RUNNING"]
        task = {"flow_run_id": run["id"], "task_key": "t", "name": "t"}
        assert api.post("/api/task_runs", json=task).status_code == 201
        assert api.post("/api/task_runs", json=task).status_code == 409
        line = {
            "name": "flow",
            "level": 20,
            "message": "hello",
            "timestamp": "2026-03-01T12:00:00.123456Z",
            "flow_run_id": run["id"],
        }
        assert api.post("/api/logs", json=[line]).status_code == 201
        logs = api.get(f"/api/logs?flow_run_id={run['id']}").json()
        assert [log["timestamp"] for log in logs] == ["2026-03-01T12:00:00.123456Z"]
        assert api.post("/api/admin/database/clear").status_code == 200
        assert api.get("/api/flows").json() == []


def test_connections_share_one_preferred_tls_context_and_still_connect(mariadb_url: str) -> None:
    """flowdb's PyMySQL connections reuse one unverified preferred-mode TLS context."""
    import ssl

    engine = Database.from_url(mariadb_url).dialect.create_sync_engine("flowdb-test")
    try:
        contexts = []
        for _ in range(2):
            with engine.connect() as connection:
                assert connection.execute(sa.text("SELECT 1")).scalar() == 1
                contexts.append(connection.connection.dbapi_connection.ctx)  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert contexts[0] is contexts[1]
    assert contexts[0].verify_mode == ssl.CERT_NONE and not contexts[0].check_hostname


def test_pymysql_builds_a_preferred_tls_context_per_connection_where_flowdb_shares_one() -> None:
    """The adapter's premise, and its reach into PyMySQL (``_create_ssl_ctx``), still hold.

    Plain PyMySQL builds a context per connection (else the adapter is not needed); the
    adapter's connections share one (else PyMySQL no longer calls the method it
    overrides); explicit TLS options still get PyMySQL's own, verifying context.
    """
    import ssl

    import pymysql  # type: ignore[import-untyped]

    from flowdb.database.dialects.mysql import tls

    def plain() -> object:
        return pymysql.connections.Connection(host="127.0.0.1", defer_connect=True).ctx

    def shared() -> object:
        return tls.connect(host="127.0.0.1", defer_connect=True).ctx

    assert plain() is not plain()
    assert shared() is shared()
    verifying = tls.connect(host="127.0.0.1", defer_connect=True, ssl_verify_cert=True).ctx
    assert verifying is not shared()
    assert verifying.verify_mode == ssl.CERT_REQUIRED

"""Credentials and configuration as users write them, on real servers.

* A non-ASCII password on MariaDB connects (migrations on PyMySQL, the API on aiomysql),
  and the run record names the database account, not the OS user.
* An empty ``FLOWDB_HOME`` means the default folder, never the working directory.
* SQLite files are in WAL mode from the first command that writes them.
* A transaction pooler (PgBouncer) in front of PostgreSQL is detected, not configured.
* A schema chosen in a PostgreSQL URL holds for migrations, reads, the lock and the API.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from flowdb.database.history import load_history
from flowdb.database.target import Database
from tests.cli.helpers import flowdb
from tests.dbtools import MARIADB_ADMIN_URL, revision_of, sync_engine, upgrades_at_once

HEAD = load_history().head


@pytest.fixture
def mariadb_user_url(mariadb_url: str) -> Iterator[str]:
    """``mariadb_url`` as a new account whose password is not ASCII, dropped afterwards."""
    name = f"flowdb_u_{uuid.uuid4().hex[:8]}"
    password = "pässwörd-€-日本"
    database = sa.make_url(mariadb_url).database
    admin = sa.create_engine(MARIADB_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(
                sa.text(f"CREATE USER '{name}'@'%' IDENTIFIED BY :password"),
                {"password": password},
            )
            connection.execute(sa.text(f"GRANT ALL ON `{database}`.* TO '{name}'@'%'"))
        yield (
            sa.make_url(mariadb_url)
            .set(username=name, password=password)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP USER IF EXISTS '{name}'@'%'"))
        admin.dispose()


def test_a_non_ascii_mariadb_password_connects_and_the_record_names_the_account(
    mariadb_user_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from flowdb.server.app import create_app

    result = flowdb(mariadb_user_url, "database", "upgrade", "-y")
    assert result.returncode == 0, result.stderr
    assert revision_of(mariadb_user_url) == HEAD
    user = sa.make_url(mariadb_user_url).username
    engine = sync_engine(mariadb_user_url)
    try:
        with engine.connect() as connection:
            recorded = set(
                connection.execute(sa.text("SELECT db_user FROM flowdb_migration_run")).scalars()
            )
    finally:
        engine.dispose()
    assert recorded == {f"{user}@%"}
    # The API server's driver (aiomysql) sends the password the same way.
    monkeypatch.setenv("FLOWDB_DATABASE_URL", mariadb_user_url)
    with TestClient(create_app(), raise_server_exceptions=False) as api:
        created = api.post("/api/flows", json={"name": "ünïcode"})
        assert created.status_code == 201, created.text
        assert [flow["name"] for flow in api.get("/api/flows").json()] == ["ünïcode"]


@pytest.mark.parametrize("blank", ["", "  "])
def test_an_empty_flowdb_home_means_the_default_folder(tmp_path: Path, blank: str) -> None:
    """``FLOWDB_HOME=`` reads as unset: the database goes to ~/.flowdb, not the working dir."""
    user_home = tmp_path / "user"
    work = tmp_path / "work"
    user_home.mkdir()
    work.mkdir()
    result = flowdb(
        None,
        "database",
        "upgrade",
        "-y",
        env={"FLOWDB_HOME": blank, "HOME": str(user_home)},
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    assert list(work.iterdir()) == []
    database = user_home / ".flowdb" / "flowdb.db"
    assert revision_of(f"sqlite:///{database}") == HEAD


def _journal_mode_in_header(path: Path) -> str:
    """The file's journal mode from its header (bytes 18-19 are 2 in WAL mode), unopened."""
    header = path.read_bytes()[:20]
    return "wal" if header[18:20] == b"\x02\x02" else "rollback"


def test_the_first_cli_command_puts_a_sqlite_file_in_wal_mode(tmp_path: Path) -> None:
    """Fresh install (sqlite3) and replay (SQLAlchemy) both leave WAL files, so that an
    upgrade commits while a reader holds a transaction open, and the reader goes on."""
    history = load_history()
    installed = tmp_path / "installed.db"
    result = flowdb(f"sqlite:///{installed}", "database", "upgrade", "-y")
    assert result.returncode == 0, result.stderr
    assert _journal_mode_in_header(installed) == "wal"

    replayed = tmp_path / "replayed.db"
    url = f"sqlite:///{replayed}"
    first = history.revisions[0].id
    result = flowdb(url, "database", "upgrade", "-y", "-r", first)
    assert result.returncode == 0, result.stderr
    assert _journal_mode_in_header(replayed) == "wal"
    reader = sqlite3.connect(str(replayed), isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT version_num FROM alembic_version").fetchone() == (first,)
        # In rollback-journal mode this upgrade could not commit while the read is open.
        result = flowdb(
            url, "database", "upgrade", "-y", env={"FLOWDB_MIGRATION_LOCK_TIMEOUT": "5"}
        )
        assert result.returncode == 0, result.stderr
        assert reader.execute("SELECT version_num FROM alembic_version").fetchone() == (first,)
        reader.execute("COMMIT")
    finally:
        reader.close()
    assert revision_of(url) == HEAD


def test_reads_of_a_wal_file_do_not_wait_for_its_writer(tmp_path: Path) -> None:
    """``current`` and ``upgrade --dry-run`` answer while another connection writes."""
    path = tmp_path / "flowdb.db"
    url = f"sqlite:///{path}"
    first = load_history().revisions[0].id
    assert flowdb(url, "database", "upgrade", "-y", "-r", first).returncode == 0
    writer = sqlite3.connect(str(path), isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE alembic_version SET version_num = version_num")
        env = {"FLOWDB_MIGRATION_LOCK_TIMEOUT": "1"}
        for args in (("current",), ("upgrade", "--dry-run")):
            result = flowdb(url, "database", *args, env=env)
            assert result.returncode == 0, result.stderr
            assert "Waiting" not in result.stderr
            assert first in result.stdout
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# --- PostgreSQL: the pooler detected ----------------------------------------------------


def test_pooler_detection_is_right_for_every_one_of_many_simultaneous_probes(
    postgres_url: str, pgbouncer_port: int
) -> None:
    """16 threads probe at once through PgBouncer (transaction mode) and 16 directly.

    Under load one round of the session test could miss the pooler (a racing process
    then took the lock as a session lock and stopped with a configuration error); the
    direct connection is now recognised by its own client port, and a pooled one gets
    many rounds.
    """
    from concurrent.futures import ThreadPoolExecutor

    from flowdb.database.dialects.postgresql.connecting import detect_transaction_pooler
    from tests.pgbouncer import through

    pooled = sa.make_url(through(pgbouncer_port, postgres_url))
    direct = sa.make_url(postgres_url)
    with ThreadPoolExecutor(max_workers=32) as pool:
        through_pooler = list(pool.map(detect_transaction_pooler, [pooled] * 16))
        straight = list(pool.map(detect_transaction_pooler, [direct] * 16))
    assert through_pooler == [True] * 16
    assert straight == [False] * 16


def test_the_pooler_probe_opens_a_second_connection_only_behind_something(
    postgres_url: str, pgbouncer_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Directly, the probe's first connection answers; the session test needs two."""
    import psycopg

    from flowdb.database.dialects.postgresql.connecting import detect_transaction_pooler
    from tests.pgbouncer import through

    opened: list[str] = []
    connect = psycopg.connect

    def counted(conninfo: str, **options: object) -> object:
        opened.append(conninfo)
        return connect(conninfo, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(psycopg, "connect", counted)
    assert detect_transaction_pooler(sa.make_url(postgres_url)) is False
    assert len(opened) == 1
    opened.clear()
    assert detect_transaction_pooler(sa.make_url(through(pgbouncer_port, postgres_url))) is True
    assert len(opened) == 2


def test_a_direct_connection_is_known_by_its_own_client_port(
    postgres_url: str, pgbouncer_port: int
) -> None:
    """The server reports this socket's port directly, PgBouncer's own port through it."""
    import psycopg

    from flowdb.database.dialects.postgresql.connecting import _reaches_server_directly
    from tests.pgbouncer import through

    def reaches(url: str) -> bool:
        conninfo = sa.make_url(url).set(drivername="postgresql")
        text = conninfo.render_as_string(hide_password=False)
        with psycopg.connect(text, autocommit=True, prepare_threshold=None) as connection:
            return _reaches_server_directly(connection)

    assert reaches(postgres_url)
    assert not reaches(through(pgbouncer_port, postgres_url))


@pytest.mark.slow
def test_behind_pgbouncer_in_transaction_mode_8_racing_processes_all_succeed_unconfigured(
    postgres_url: str, pgbouncer_port: int
) -> None:
    """``FLOWDB_DATABASE_POOL_MODE`` left at ``auto``: the pooler is detected, exactly one
    process migrates under the transaction-level lock, the seven others find it done."""
    from tests.pgbouncer import through

    url = through(pgbouncer_port, postgres_url)
    assert Database.from_url(url).dialect.transaction_pooling  # type: ignore[attr-defined]
    assert not Database.from_url(postgres_url).dialect.transaction_pooling  # type: ignore[attr-defined]
    results = upgrades_at_once(url, 8)
    failed = [err for code, _, err in results if code != 0]
    assert [code for code, _, _ in results] == [0] * 8, failed
    outputs = [out + err for _, out, err in results]
    assert sum("↑" in output for output in outputs) == 1, outputs
    assert sum("Nothing to upgrade" in output for output in outputs) == 7, outputs
    assert revision_of(postgres_url) == HEAD


def test_a_session_pooler_is_not_taken_for_a_transaction_pooler(postgres_url: str) -> None:
    from tests.dbtools import ADMIN_URL
    from tests.pgbouncer import running_pgbouncer, through

    with running_pgbouncer(ADMIN_URL, pool_mode="session", ignored="options") as port:
        url = through(port, postgres_url)
        assert not Database.from_url(url).dialect.transaction_pooling  # type: ignore[attr-defined]
        result = flowdb(url, "database", "upgrade", "-y")
        assert result.returncode == 0, result.stderr
    assert revision_of(postgres_url) == HEAD


# --- PostgreSQL: a schema in the URL ------------------------------------------------------


def _in_schema(url: str, schema: str) -> str:
    """``url`` with libpq's options choosing ``schema`` (as users write it, percent-encoded)."""
    return f"{url}?options=-csearch_path%3D{schema}"


def _tables_by_schema(url: str) -> dict[str, set[str]]:
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT schemaname, tablename FROM pg_tables "
                    "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
                )
            ).all()
    finally:
        engine.dispose()
    found: dict[str, set[str]] = {}
    for schema, table in rows:
        found.setdefault(str(schema), set()).add(str(table))
    return found


def test_two_tenant_schemas_in_one_database_are_migrated_and_served_apart(
    postgres_url: str, pgbouncer_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tenant_a: a fresh install, directly; tenant_b: a replay through PgBouncer (options
    set per transaction there), while tenant_a's lock is held; nothing lands in public."""
    from fastapi.testclient import TestClient

    from flowdb.database import fresh
    from flowdb.server.app import create_app
    from tests.dbtools import lock_holder
    from tests.pgbouncer import through

    engine = sync_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b"))
    finally:
        engine.dispose()
    url_a = _in_schema(postgres_url, "tenant_a")
    url_b = _in_schema(through(pgbouncer_port, postgres_url), "tenant_b")
    result = flowdb(url_a, "database", "upgrade", "-y")
    assert result.returncode == 0, result.stderr
    first = load_history().revisions[0].id
    with lock_holder(url_a):  # each schema has a lock of its own
        env = {"FLOWDB_MIGRATION_LOCK_TIMEOUT": "5"}
        result = flowdb(url_b, "database", "upgrade", "-y", "-r", first, env=env)
        assert result.returncode == 0, result.stderr
        result = flowdb(url_b, "database", "upgrade", "-y", env=env)
        assert result.returncode == 0, result.stderr
        assert "↑" in result.stdout + result.stderr
    tables = _tables_by_schema(postgres_url)
    assert "public" not in tables, tables
    assert tables["tenant_a"] == tables["tenant_b"]
    assert {"alembic_version", "flowdb_migration_run", "flow"} <= tables["tenant_a"]
    assert revision_of(url_a) == revision_of(url_b) == HEAD
    for url in (url_a, url_b):
        check = flowdb(url, "database", "check")
        assert check.returncode == 0, check.stdout + check.stderr
        history = flowdb(url, "database", "history")
        assert history.returncode == 0 and first in history.stdout, history.stderr
    # The snapshot's parts read the schema of the URL: catalogue and pg_dump.
    direct_b = _in_schema(postgres_url, "tenant_b")
    assert fresh.catalogue(Database.from_url(url_a)) == fresh.catalogue(Database.from_url(direct_b))
    dumped = "\n".join(Database.from_url(url_a).dialect.dump_schema(frozenset()))
    assert "CREATE TABLE flow " in dumped and "tenant_a." not in dumped
    # The API serves each tenant from its own schema.
    names = {}
    for url, name in ((url_a, "in-a"), (url_b, "in-b")):
        monkeypatch.setenv("FLOWDB_DATABASE_URL", url)
        with TestClient(create_app(), raise_server_exceptions=False) as api:
            assert api.get("/api/ready").json()["status"] == "ready"
            assert api.post("/api/flows", json={"name": name}).status_code == 201
            names[url] = [flow["name"] for flow in api.get("/api/flows").json()]
    assert names == {url_a: ["in-a"], url_b: ["in-b"]}


def test_a_search_path_naming_no_existing_schema_is_refused_in_one_line(
    postgres_url: str,
) -> None:
    url = _in_schema(postgres_url, "no_such_schema")
    result = flowdb(url, "database", "upgrade", "-y")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: No schema of the search_path"), result.stderr
    assert "Traceback" not in result.stderr
    assert "public" not in _tables_by_schema(postgres_url)


def test_the_run_record_names_the_database_user(database_url: str) -> None:
    """The role (PostgreSQL), the account (MariaDB), the OS user (SQLite, which has none)."""
    import getpass

    result = flowdb(database_url, "database", "upgrade", "-y")
    assert result.returncode == 0, result.stderr
    engine = sync_engine(database_url)
    try:
        with engine.connect() as connection:
            recorded = set(
                connection.execute(sa.text("SELECT db_user FROM flowdb_migration_run")).scalars()
            )
            if engine.dialect.name == "sqlite":
                expected = getpass.getuser()
            else:
                expected = connection.execute(sa.text("SELECT CURRENT_USER")).scalar()
    finally:
        engine.dispose()
    assert recorded == {expected}


def test_a_mariadb_user_out_of_connections_is_told_so_not_of_a_rolled_back_statement(
    mariadb_user_url: str,
) -> None:
    """Error 1226 at connect time read "The database rejected a statement and it was
    rolled back" with the exit code of a failed migration; nothing had run."""
    from flowdb.errors import ExitCode
    from tests.cli.helpers import assert_one_line_error

    user = sa.make_url(mariadb_user_url).username
    admin = sa.create_engine(MARIADB_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f"ALTER USER '{user}'@'%' WITH MAX_USER_CONNECTIONS 1"))
    finally:
        admin.dispose()
    holder = sync_engine(mariadb_user_url)
    try:
        with holder.connect():  # the user's one connection
            result = flowdb(mariadb_user_url, "database", "upgrade", "-y")
    finally:
        holder.dispose()
    assert result.returncode == ExitCode.UNREACHABLE
    assert_one_line_error(result, "turned flowdb away", "max_user_connections", "ALTER USER")
    assert revision_of(mariadb_user_url) is None


# --- the longest timeouts ----------------------------------------------------------------


def test_the_longest_timeouts_are_ones_every_server_takes(database_url: str) -> None:
    """``LONGEST_TIMEOUT`` (2**31 - 1 ms) is set on the migration connections as it is:
    one more second was refused by PostgreSQL at connect time (a later bound in the
    settings refuses it first: ``tests/test_setting_values.py``)."""
    from flowdb.settings import LONGEST_TIMEOUT

    longest = str(LONGEST_TIMEOUT)
    timeouts = ("LOCK_TIMEOUT", "STATEMENT_TIMEOUT", "DDL_LOCK_TIMEOUT")
    env = {f"FLOWDB_MIGRATION_{name}": longest for name in timeouts}
    result = flowdb(database_url, "database", "upgrade", "-y", env=env)
    assert result.returncode == 0, result.stderr
    assert revision_of(database_url) == HEAD

"""Credentials and configuration as users write them, on real servers.

* A non-ASCII password on MariaDB connects (migrations on PyMySQL, the API on aiomysql),
  and the run record names the database account, not the OS user.
* An empty ``FLOWDB_HOME`` means the default folder, never the working directory.
* SQLite files are in WAL mode from the first command that writes them.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from flowdb.database.history import load_history
from tests.cli.helpers import flowdb
from tests.dbtools import MARIADB_ADMIN_URL, revision_of, sync_engine

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

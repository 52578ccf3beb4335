"""Credentials and configuration as users write them, on real servers.

* A non-ASCII password on MariaDB connects (migrations on PyMySQL, the API on aiomysql),
  and the run record names the database account, not the OS user.
* An empty ``FLOWDB_HOME`` means the default folder, never the working directory.
"""

from __future__ import annotations

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

"""The CLI as operators meet it: a real subprocess, one-line errors, an unchanged database."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from flowdb.database.history import load_history
from tests.cli.helpers import assert_one_line_error, fingerprint, flowdb, ok
from tests.dbtools import set_revision, sync_engine


def test_upgrade_current_history_downgrade(database_url: str) -> None:
    history = load_history()
    middle = history.revisions[4].id
    result = flowdb(database_url, "database", "upgrade", "-y", "-r", middle)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("↑") == 5
    assert history.revisions[0].id in result.stderr
    listing = flowdb(database_url, "database", "history").stdout
    assert "(current)" in listing
    assert f"5 applied, {len(history.revisions) - 5} pending" in listing
    assert flowdb(database_url, "database", "upgrade", "-y").returncode == 0
    assert "Status: at head" in flowdb(database_url, "database", "current").stdout
    assert flowdb(database_url, "database", "check").returncode == 0
    down = flowdb(database_url, "database", "downgrade", "-y")
    assert down.returncode == 0
    assert down.stderr.count("↓") == 1
    check = flowdb(database_url, "database", "check")
    assert check.returncode == 1
    # The head (a contract) declared log.flow_run_id NOT NULL; its downgrade undid it.
    assert "log, flow_run_id" in check.stdout
    assert "1 migration(s) pending" in flowdb(database_url, "database", "current").stdout


def test_reset_drops_data_and_ends_at_head(database_url: str) -> None:
    assert flowdb(database_url, "database", "upgrade", "-y").returncode == 0
    engine = sync_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO variable (id, name) VALUES (:id, 'x')"),
                {
                    "id": "0" * 32
                    if database_url.startswith("sqlite")
                    else "00000000-0000-0000-0000-000000000000"
                },
            )
        assert flowdb(database_url, "database", "reset", "-y").returncode == 0
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM variable")).scalar() == 0
    finally:
        engine.dispose()
    assert "Status: at head" in flowdb(database_url, "database", "current").stdout


def test_default_database_is_created_in_home(tmp_path: Path) -> None:
    home = tmp_path / "new-home"
    result = flowdb(None, "database", "upgrade", "-y", home=home)
    assert result.returncode == 0, result.stderr
    assert (home / "flowdb.db").exists()


@pytest.mark.parametrize(
    ("command", "start"), [(["upgrade"], None), (["downgrade"], "head"), (["reset"], "head")]
)
def test_destructive_commands_refuse_without_a_terminal(
    sqlite_url: str, command: list[str], start: str | None
) -> None:
    # Each from a database where the command has something to do (nothing to do: no question).
    if start is not None:
        ok(flowdb(sqlite_url, "database", "upgrade", "-y", "-r", start))
    before = fingerprint(sqlite_url)
    result = flowdb(sqlite_url, "database", *command)
    assert_one_line_error(result, "--yes")
    assert fingerprint(sqlite_url) == before


BAD_INPUT = [
    (["upgrade", "-y", "-r", "deadbeef"], ("deadbeef", "flowdb database history")),
    (["downgrade", "-y", "-r", "nope"], ("nope",)),
    (["stamp", "nope"], ("nope",)),
    (["downgrade", "-y", "-r", "-50"], ("-50", "base")),
    (["revision", "-m", ""], ("empty", "-m")),
    (["revision"], ("empty",)),
]


@pytest.mark.parametrize(("args", "words"), BAD_INPUT)
def test_bad_input_leaves_the_database_unchanged(
    database_url: str, args: list[str], words: tuple[str, ...]
) -> None:
    assert flowdb(database_url, "database", "upgrade", "-y", "-r", "+3").returncode == 0
    before = fingerprint(database_url)
    assert_one_line_error(flowdb(database_url, "database", *args), *words)
    assert fingerprint(database_url) == before


def test_downgrade_of_an_empty_database_is_refused(database_url: str) -> None:
    before = fingerprint(database_url)
    assert_one_line_error(flowdb(database_url, "database", "downgrade", "-y"), "base")
    assert fingerprint(database_url) == before


@pytest.mark.parametrize("command", [["upgrade", "-y"], ["downgrade", "-y"], ["current"]])
def test_database_newer_than_the_code(database_url: str, command: list[str]) -> None:
    assert flowdb(database_url, "database", "upgrade", "-y").returncode == 0
    set_revision(database_url, "ffffffffffff")
    before = fingerprint(database_url)
    result = flowdb(database_url, "database", *command)
    if command == ["current"]:
        assert "newer than this flowdb" in result.stdout
    else:
        assert_one_line_error(result, "ffffffffffff", "newer flowdb")
    assert fingerprint(database_url) == before


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/x", ("Cannot connect", "127.0.0.1:1")),
        ("postgresql://postgres@no-such-host.invalid/x", ("Cannot connect",)),
        ("foo:bar", ("malformed", "FLOWDB_DATABASE_URL")),
        ("mssql://root@127.0.0.1/test", ("does not support",)),
        ("postgresql://127.0.0.1", ("no database",)),
    ],
)
def test_unusable_urls(url: str, words: tuple[str, ...]) -> None:
    result = flowdb(url, "database", "upgrade", "-y")
    assert_one_line_error(result, *words)
    assert "s3cret" not in result.stdout + result.stderr


def test_read_only_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    assert flowdb(f"sqlite:///{path}", "database", "upgrade", "-y", "-r", "+1").returncode == 0
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    # Tests run as root, whom file modes do not stop; SQLite's own read-only mode does.
    result = flowdb(f"sqlite:///file:{path}?mode=ro&uri=true", "database", "upgrade", "-y")
    assert_one_line_error(result, "read-only")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_sqlite_folder_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    result = flowdb(f"sqlite:///{blocker}/flowdb.db", "database", "upgrade", "-y")
    assert_one_line_error(result, "not a folder")


def test_malformed_setting() -> None:
    result = flowdb(None, "database", "current", env={"FLOWDB_MIGRATION_LOCK_TIMEOUT": "abc"})
    assert_one_line_error(result, "FLOWDB_MIGRATION_LOCK_TIMEOUT")


def test_help_imports_neither_alembic_nor_sqlalchemy() -> None:
    code = (
        "import sys\nfrom flowdb.cli.root import app\n"
        "try:\n    app(['database', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('alembic' in sys.modules, 'sqlalchemy' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "False False"

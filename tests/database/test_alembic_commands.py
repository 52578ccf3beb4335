"""The reference API: its contract, dry-runs, stamping and thread safety, on both dialects."""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from flowdb.database import alembic_commands
from flowdb.database.alembic_commands import (
    alembic_downgrade,
    alembic_revision,
    alembic_stamp,
    alembic_upgrade,
    with_alembic_lock,
)
from flowdb.database.history import load_history
from flowdb.database.status import read_current_revision
from flowdb.database.urls import parse_database_url
from flowdb.errors import InvalidRevisionMessageError, UnknownRevisionError
from tests.dbtools import sync_engine

EMPTY = inspect.Parameter.empty


def table_names(url: str) -> set[str]:
    engine = sync_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        (alembic_upgrade, [("revision", "head"), ("dry_run", False)]),
        (alembic_downgrade, [("revision", "-1"), ("dry_run", False)]),
        (alembic_revision, [("message", None), ("autogenerate", False), ("kwargs", EMPTY)]),
        (alembic_stamp, [("revision", EMPTY)]),
    ],
)
def test_signatures_match_the_reference(
    function: object, expected: list[tuple[str, object]]
) -> None:
    parameters = inspect.signature(function).parameters  # type: ignore[arg-type]
    assert [(p.name, p.default) for p in parameters.values()] == expected


def test_alembic_config_points_at_flowdb_migrations(configured: str) -> None:
    config = alembic_commands.alembic_config()
    assert Path(config.get_main_option("script_location") or "").name == "migrations"
    assert config.attributes["database"].url == parse_database_url(configured).url


def test_lock_decorator_keeps_metadata_and_is_reentrant() -> None:
    @with_alembic_lock
    def outer() -> str:
        """Outer docstring."""
        return inner()

    @with_alembic_lock
    def inner() -> str:
        return "done"

    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(outer()))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "nested locked calls deadlocked"
    assert results == ["done"]
    assert outer.__name__ == "outer"
    assert outer.__doc__ == "Outer docstring."


def test_importing_the_commands_does_not_import_alembic() -> None:
    code = "import sys, flowdb.database.alembic_commands; print('alembic' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "False"


def test_upgrade_dry_run_prints_sql_and_writes_nothing(
    configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    alembic_upgrade(dry_run=True)
    sql = capsys.readouterr().out
    assert "CREATE TABLE flow_run" in sql
    assert "alembic_version" in sql
    database = parse_database_url(configured)
    if database.sqlite_path is not None:
        assert not database.sqlite_path.exists()
    else:
        assert table_names(configured) == set()


def test_dry_run_from_a_middle_revision_shows_only_pending_ones(
    configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    history = load_history()
    middle = history.revisions[5].id
    alembic_upgrade(middle)
    capsys.readouterr()
    alembic_upgrade(dry_run=True)
    sql = capsys.readouterr().out
    assert f"Running upgrade {middle} -> {history.revisions[6].id}" in sql
    assert "CREATE TABLE flow_run " not in sql
    assert read_current_revision(parse_database_url(configured)) == middle


def test_downgrade_dry_run_default_reverts_one_revision_only(
    configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    alembic_upgrade()
    capsys.readouterr()
    alembic_downgrade(dry_run=True)
    sql = capsys.readouterr().out
    history = load_history()
    assert sql.count("Running downgrade") == 1
    assert f"Running downgrade {history.head} -> {history.revisions[-2].id}" in sql
    assert read_current_revision(parse_database_url(configured)) == history.head
    assert "deployment_schedule" in table_names(configured)


def test_explicit_range_dry_run_needs_no_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOWDB_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    alembic_upgrade("base:head", dry_run=True)
    assert "CREATE TYPE state_type" in capsys.readouterr().out


def test_stamp_records_a_revision_without_migrating(configured: str) -> None:
    database = parse_database_url(configured)
    alembic_stamp("head")
    assert read_current_revision(database) == load_history().head
    assert table_names(configured) == {"alembic_version"}
    alembic_stamp("base")
    assert read_current_revision(database) is None
    with pytest.raises(UnknownRevisionError):
        alembic_stamp("0123456789ab")
    assert read_current_revision(database) is None


def test_empty_revision_message_is_refused() -> None:
    with pytest.raises(InvalidRevisionMessageError):
        alembic_revision(message="  ")


def test_twenty_threads_upgrade_one_fresh_database(configured: str) -> None:
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def upgrade() -> None:
        barrier.wait()
        try:
            alembic_upgrade()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=upgrade) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert read_current_revision(parse_database_url(configured)) == load_history().head

"""flowdb's record of migration runs, and the refusal to build on a changed revision file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flowdb.database import commands
from flowdb.database import history as history_module
from flowdb.database.journal import RUN_TABLE, read_runs
from flowdb.database.target import Database
from flowdb.errors import ChangedRevisionError, FlowdbError
from tests.cli.helpers import fingerprint, flowdb
from tests.dbtools import sync_engine

IDS = [revision.id for revision in history_module.load_history().revisions]


def runs(url: str) -> list[dict[str, object]]:
    database = Database.from_url(url)
    return read_runs(database, database.status())


def test_each_step_up_and_down_is_recorded_and_the_record_survives(database_url: str) -> None:
    database = Database.from_url(database_url)
    commands.migrate(database, "upgrade", IDS[2])
    commands.migrate(database, "downgrade", "base")
    commands.stamp(database, IDS[1])

    rows = runs(database_url)

    assert [(r["revision"], r["direction"]) for r in rows] == [
        (IDS[0], "upgrade"),
        (IDS[1], "upgrade"),
        (IDS[2], "upgrade"),
        (IDS[2], "downgrade"),
        (IDS[1], "downgrade"),
        (IDS[0], "downgrade"),
        (IDS[0], "stamp"),
        (IDS[1], "stamp"),
    ]
    first = rows[0]
    assert first["success"] is True and first["error"] is None
    assert str(first["started_at"]).endswith("Z") and int(str(first["duration_ms"])) >= 0
    assert first["db_user"] and first["host"] and int(str(first["pid"])) > 0
    assert len(str(first["file_hash"])) == 64


def test_a_failed_step_is_recorded_in_its_own_transaction(database_url: str) -> None:
    database = Database.from_url(database_url)
    commands.migrate(database, "upgrade", IDS[1])
    # Another application's table with the name the next migration creates, but hidden
    # from the clash check: the CREATE TABLE itself fails.
    engine = sync_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE VIEW log AS SELECT 1 AS id")
    finally:
        engine.dispose()

    with pytest.raises(FlowdbError):
        commands.migrate(database, "upgrade", IDS[2])

    failed = runs(database_url)[-1]
    assert failed["revision"] == IDS[2] and failed["direction"] == "upgrade"
    assert failed["success"] is False
    assert failed["error"] and "\n" not in str(failed["error"])
    assert database.status().current == IDS[1]


def changed_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, revision: str) -> None:
    """Point flowdb at a copy of the history whose ``revision`` file was edited."""
    copy = tmp_path / "migrations"
    shutil.copytree(
        history_module.MIGRATIONS_FOLDER, copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    edited = next((copy / "versions").glob(f"*_{revision}_*.py"))
    edited.write_text(edited.read_text(encoding="utf-8") + "\n# edited after release\n")
    monkeypatch.setattr(history_module, "MIGRATIONS_FOLDER", copy)
    history_module.forget_history()


def test_an_upgrade_over_a_changed_applied_file_is_refused_until_accepted(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands.migrate(Database.from_url(database_url), "upgrade", IDS[4])
    changed_history(tmp_path, monkeypatch, IDS[2])
    database = Database.from_url(database_url)
    before = fingerprint(database_url)

    with pytest.raises(ChangedRevisionError, match=rf"{IDS[2]}.*--accept-changed-revisions"):
        commands.migrate(database, "upgrade", "head")
    assert fingerprint(database_url) == before
    assert commands.changed_files(database, database.status()) == [IDS[2]]

    commands.migrate(database, "upgrade", "head", accept_changed=True)

    assert database.status().at_head
    assert commands.changed_files(database, database.status()) == []
    accepted = [r for r in runs(database_url) if r["direction"] == "accept"]
    assert [r["revision"] for r in accepted] == [IDS[2]]
    history_module.forget_history()


def test_current_and_check_say_when_an_applied_file_changed(
    sqlite_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    assert flowdb(sqlite_url, "database", "upgrade", "-y", home=home).returncode == 0
    copy = tmp_path / "migrations"
    shutil.copytree(
        history_module.MIGRATIONS_FOLDER, copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    edited = next((copy / "versions").glob(f"*_{IDS[3]}_*.py"))
    edited.write_text(edited.read_text(encoding="utf-8") + "\n# edited\n")

    current = flowdb(sqlite_url, "database", "current", home=home, migrations=copy)
    check = flowdb(sqlite_url, "database", "check", home=home, migrations=copy)
    as_json = flowdb(sqlite_url, "database", "current", "--json", home=home, migrations=copy)

    assert current.returncode == 0 and f"Changed: the file of revision {IDS[3]}" in current.stdout
    assert check.returncode == 1 and f"revision {IDS[3]}: its file differs" in check.stdout
    assert f'"changed_revisions": [\n    "{IDS[3]}"\n  ]' in as_json.stdout


def test_history_shows_when_and_by_whom_each_revision_was_applied(
    database_url: str, tmp_path: Path
) -> None:
    import json

    home = tmp_path / "home"
    for target in (IDS[1], "head"):
        upgrade = flowdb(database_url, "database", "upgrade", "-y", "-r", target, home=home)
        assert upgrade.returncode == 0, upgrade.stderr

    text = flowdb(database_url, "database", "history", home=home)
    listed = json.loads(flowdb(database_url, "database", "history", "--json", home=home).stdout)
    current = json.loads(flowdb(database_url, "database", "current", "--json", home=home).stdout)

    assert text.returncode == 0
    first_line = text.stdout.splitlines()[0]
    assert IDS[0] in first_line and " UTC by " in first_line and "(upgrade)" in first_line
    assert [item["revision"] for item in listed] == IDS
    assert all(item["applied"] and item["applied_at"] for item in listed)
    assert listed[0]["direction"] == "upgrade" and "@" in listed[0]["applied_by"]
    assert current["revision"] == IDS[-1] and current["at_head"] is True
    assert current["applied_at"] == listed[-1]["applied_at"]
    assert RUN_TABLE not in {item["revision"] for item in listed}

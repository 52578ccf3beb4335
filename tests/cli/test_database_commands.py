"""``flowdb database ...`` as operators run it: its ``main()``, no terminal, real databases.

Each test runs on a fresh SQLite file and on a fresh PostgreSQL database (``database_url``).
What the commands print is checked against what the database then holds, read with a
plain SQLAlchemy engine, not through flowdb.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from flowdb.database.history import load_history
from flowdb.database.orm_models import Flow, Variable
from tests.cli.helpers import (
    assert_one_line_error,
    current_revision,
    fingerprint,
    flowdb,
    is_sqlite,
    ok,
    sqlite_file,
)
from tests.dbtools import nullable_columns, sync_engine

HISTORY = load_history()
IDS = [revision.id for revision in HISTORY.revisions]
HEAD = IDS[-1]
#: A revision in the middle of the history, for partial upgrades.
MIDDLE = 6
#: One line of the live report: "↑ <id>  <title>  0.01 s".
STEP_LINE = re.compile(
    r"^\s*(?P<mark>[↑↓]) (?P<id>[0-9a-f]{12})  .+?(?:  (?P<seconds>\d+\.\d\d) s)?$"
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """FLOWDB_HOME for the subprocess (not created: flowdb creates it when it needs it)."""
    return tmp_path / "home"


def steps(stderr: str) -> list[tuple[str, str]]:
    """The (mark, revision) of every migration the live report printed, in order."""
    found = []
    for line in stderr.splitlines():
        match = STEP_LINE.match(line)
        if match:
            found.append((match["mark"], match["id"]))
    return found


def flowdb_tables(url: str) -> set[str]:
    """The tables in the database, read without flowdb."""
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            return set(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_reports_each_migration_and_current_says_at_head(
    database_url: str, home: Path
) -> None:
    result = ok(flowdb(database_url, "database", "upgrade", "-y", home=home))

    assert steps(result.stderr) == [("↑", revision) for revision in IDS]
    # A fresh install: the revisions landed together, so no line shows a time of its own
    # (no "0.00 s"); the one total is the result line's.
    for line in result.stderr.splitlines():
        if STEP_LINE.match(line):
            assert STEP_LINE.match(line)["seconds"] is None, line  # type: ignore[index]
    assert "Installed the head schema" in result.stderr
    # The result is the one line on stdout; progress stays on stderr.
    [finished] = result.stdout.splitlines()
    assert finished.startswith(f"Upgrade finished: {len(IDS)} migration(s) from the snapshot in ")
    assert "Upgrade finished" not in result.stderr
    assert current_revision(database_url) == HEAD
    assert "deployment_schedule" in flowdb_tables(database_url)

    current = ok(flowdb(database_url, "database", "current", home=home))
    assert f"Revision: {HEAD}" in current.stdout
    assert "Status: at head" in current.stdout

    again = ok(flowdb(database_url, "database", "upgrade", "-y", home=home))
    assert steps(again.stderr) == []
    # One line, once, on stdout (it used to be printed twice in two wordings).
    assert again.stdout.count("Nothing to upgrade") == 1, again.stdout
    assert f"is at {HEAD}." in again.stdout
    assert again.stderr == ""


def test_history_marks_applied_and_pending_revisions(database_url: str, home: Path) -> None:
    middle = IDS[MIDDLE - 1]
    up = ok(flowdb(database_url, "database", "upgrade", "-y", "-r", middle, home=home))
    assert steps(up.stderr) == [("↑", revision) for revision in IDS[:MIDDLE]]
    assert current_revision(database_url) == middle

    listing = ok(flowdb(database_url, "database", "history", home=home)).stdout
    lines = {line.split()[1]: line for line in listing.splitlines() if line.split()[:1] != []}
    for index, revision in enumerate(IDS, start=1):
        line = lines[revision]
        assert line.split()[0] == str(index)
        assert HISTORY.revisions[index - 1].title in line
        if index < MIDDLE:
            assert line.endswith("✓"), line
        elif index == MIDDLE:
            assert line.endswith("✓ (current)"), line
        else:
            assert line.endswith("· pending"), line
    pending = len(IDS) - MIDDLE
    assert f"{MIDDLE} applied, {pending} pending; head is {HEAD}" in listing

    current = ok(flowdb(database_url, "database", "current", home=home)).stdout
    assert f"Revision: {middle}" in current
    assert f"{pending} migration(s) pending" in current


def test_downgrade_goes_back_one_revision_by_default(database_url: str, home: Path) -> None:
    ok(flowdb(database_url, "database", "upgrade", "-y", home=home))

    down = ok(flowdb(database_url, "database", "downgrade", "-y", home=home))
    assert steps(down.stderr) == [("↓", HEAD)]
    assert current_revision(database_url) == IDS[-2]
    # The head (a contract) declared log.flow_run_id NOT NULL; one step back undoes it.
    assert "flow_run_id" in nullable_columns(database_url, "log")

    again = ok(flowdb(database_url, "database", "downgrade", "-y", "-r", "-2", home=home))
    assert steps(again.stderr) == [("↓", IDS[-2]), ("↓", IDS[-3])]
    assert current_revision(database_url) == IDS[-4]


def test_upgrade_dry_run_prints_sql_and_creates_nothing(database_url: str, home: Path) -> None:
    before = fingerprint(database_url)
    result = ok(flowdb(database_url, "database", "upgrade", "--dry-run", home=home))

    assert re.search(r'CREATE TABLE (IF NOT EXISTS )?"?flow"? \(', result.stdout)
    assert re.search(r'CREATE TABLE (IF NOT EXISTS )?"?deployment_schedule"? \(', result.stdout)
    # An empty database going to head: the fresh install's SQL, stamping head at the end.
    assert f"INSERT INTO alembic_version VALUES ('{HEAD}')" in result.stdout
    assert steps(result.stderr) == []  # nothing was applied, so nothing is reported
    assert fingerprint(database_url) == before
    if is_sqlite(database_url):
        path = sqlite_file(database_url)
        assert not path.exists()
        assert list(path.parent.iterdir()) == []  # no lock file either
    else:
        assert flowdb_tables(database_url) == set()
    assert not home.exists()


def test_downgrade_dry_run_at_head_prints_sql_of_one_revision(
    database_url: str, home: Path
) -> None:
    ok(flowdb(database_url, "database", "upgrade", "-y", home=home))
    before = fingerprint(database_url)

    result = ok(flowdb(database_url, "database", "downgrade", "--dry-run", home=home))

    assert result.stdout.count("UPDATE alembic_version") == 1
    assert (
        f"UPDATE alembic_version SET version_num='{IDS[-2]}' "
        f"WHERE alembic_version.version_num = '{HEAD}'"
    ) in result.stdout
    # The head's downgrade (a contract's) restores the trigger its expand keeps.
    assert re.search(
        r'CREATE (OR REPLACE )?(FUNCTION|TRIGGER)( IF NOT EXISTS)? "?flowdb_a1f5c7e9b3d2_fill',
        result.stdout,
    )
    assert steps(result.stderr) == []
    assert fingerprint(database_url) == before
    assert current_revision(database_url) == HEAD


def test_reset_drops_the_data_and_ends_at_head(database_url: str, home: Path) -> None:
    ok(flowdb(database_url, "database", "upgrade", "-y", home=home))
    engine = sync_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            session.add_all([Flow(name="etl"), Variable(name="answer", value=42)])
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM flow")).scalar() == 1

        result = ok(flowdb(database_url, "database", "reset", "-y", home=home))

        assert steps(result.stderr) == [("↑", revision) for revision in IDS]
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM flow")).scalar() == 0
            assert connection.execute(sa.text("SELECT count(*) FROM variable")).scalar() == 0
    finally:
        engine.dispose()
    assert current_revision(database_url) == HEAD
    assert "Status: at head" in ok(flowdb(database_url, "database", "current", home=home)).stdout


def test_stamp_records_a_revision_without_migrating(database_url: str, home: Path) -> None:
    target = IDS[2]
    result = ok(flowdb(database_url, "database", "stamp", "-y", target, home=home))

    assert result.stdout.splitlines()[-1].startswith("Stamped ")
    assert result.stdout.splitlines()[-1].endswith(f" at {target}.")
    assert "Stamped" not in result.stderr  # said once, as the result
    assert steps(result.stderr) == []  # a stamp runs no migration, so reports none
    assert current_revision(database_url) == target
    # Alembic's version table, and flowdb's record of runs (which notes the stamp).
    assert flowdb_tables(database_url) == {
        "alembic_version",
        "flowdb_migration_run",
        "flowdb_bookkeeping_version",
        "flowdb_replica",
    }
    current = ok(flowdb(database_url, "database", "current", home=home))
    assert f"Revision: {target}" in current.stdout

    ok(flowdb(database_url, "database", "stamp", "-y", "base", home=home))
    assert current_revision(database_url) is None
    # -r/--revision as upgrade and downgrade take it, the same as the positional.
    ok(flowdb(database_url, "database", "stamp", "-y", "-r", target, home=home))
    assert current_revision(database_url) == target
    both = flowdb(database_url, "database", "stamp", "-y", "-r", target, "base", home=home)
    assert both.returncode == 2
    assert (
        both.stderr.startswith("Error: stamp takes one revision") and both.stderr.count("\n") == 1
    )
    assert current_revision(database_url) == target


def test_check_passes_at_head_and_lists_differences_after_a_downgrade(
    database_url: str, home: Path
) -> None:
    ok(flowdb(database_url, "database", "upgrade", "-y", home=home))
    at_head = ok(flowdb(database_url, "database", "check", home=home))
    assert "matches the models" in at_head.stdout

    ok(flowdb(database_url, "database", "downgrade", "-y", home=home))
    before = fingerprint(database_url)
    behind = flowdb(database_url, "database", "check", home=home)

    assert behind.returncode == 1, behind.stderr
    assert "Traceback" not in behind.stderr
    count = re.search(r"differs from the models in (\d+) place\(s\)", behind.stdout)
    assert count, behind.stdout
    listed = [line for line in behind.stdout.splitlines() if line.startswith("  - ")]
    assert len(listed) == int(count[1]) >= 1
    assert any("log, flow_run_id" in line for line in listed)
    assert fingerprint(database_url) == before  # check only reads


def test_check_of_a_missing_sqlite_file_fails_without_creating_it(
    sqlite_url: str, home: Path
) -> None:
    result = flowdb(sqlite_url, "database", "check", home=home)

    assert result.returncode == 1
    assert "does not exist yet" in result.stdout
    assert "flowdb database upgrade" in result.stdout
    assert not sqlite_file(sqlite_url).exists()


def _at_head_with_a_row(url: str, home: Path) -> None:
    ok(flowdb(url, "database", "upgrade", "-y", home=home))
    engine = sync_engine(url)
    try:
        with Session(engine) as session, session.begin():
            session.add(Flow(name="keep-me"))
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("command", "state"),
    [
        (["upgrade"], "empty"),
        (["upgrade", "-r", IDS[1]], "empty"),
        (["downgrade"], "head"),
        (["downgrade", "-r", "base"], "head"),
        (["reset"], "head"),
    ],
)
def test_destructive_commands_without_a_terminal_refuse_unless_given_yes(
    database_url: str, home: Path, command: list[str], state: str
) -> None:
    if state == "head":
        _at_head_with_a_row(database_url, home)
    before = fingerprint(database_url)

    result = flowdb(database_url, "database", *command, home=home)

    assert_one_line_error(result, "--yes", "not a terminal")
    assert fingerprint(database_url) == before
    assert current_revision(database_url) == (HEAD if state == "head" else None)


def test_without_a_url_upgrade_creates_the_default_database_in_home(tmp_path: Path) -> None:
    home = tmp_path / "not" / "yet" / "home"
    result = ok(flowdb(None, "database", "upgrade", "-y", home=home))

    database = home / "flowdb.db"
    assert database.is_file()
    assert len(steps(result.stderr)) == len(IDS)
    assert current_revision(f"sqlite:///{database}") == HEAD
    current = ok(flowdb(None, "database", "current", home=home)).stdout
    assert f"Database: sqlite:///{database}" in current
    assert "Status: at head" in current


def test_a_relative_home_is_created_under_the_working_folder(tmp_path: Path) -> None:
    ok(flowdb(None, "database", "upgrade", "-y", home=Path("relative-home"), cwd=tmp_path))

    database = tmp_path / "relative-home" / "flowdb.db"
    assert database.is_file()
    assert current_revision(f"sqlite:///{database}") == HEAD


def test_a_home_whose_name_looks_like_url_syntax_still_works(tmp_path: Path) -> None:
    home = tmp_path / "odd?name#with %41 signs"
    ok(flowdb(None, "database", "upgrade", "-y", "-r", IDS[0], home=home))

    assert (home / "flowdb.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [home.name]

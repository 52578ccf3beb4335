"""Backups of SQLite databases before schema changes, and restoring them (real files).

Each test works on its own SQLite file in the test's folder; the backups go to
``FLOWDB_HOME/backups`` (the autouse fixture points FLOWDB_HOME into the test's folder)
unless a test sets ``FLOWDB_BACKUP_DIR``. Row counts are read with ``sqlite3`` itself,
not through flowdb.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from flowdb.database import backup, commands
from flowdb.database.commands import describe_plan
from flowdb.database.planning import plan as make_plan
from flowdb.database.target import Database
from flowdb.errors import (
    CorruptDatabaseError,
    DatabaseNewerThanCodeError,
    DatabaseReadOnlyError,
    ForeignDatabaseError,
    UsageError,
)
from tests.dbtools import revision_of, seed_flow_runs

BACKUP_NAME = r"flowdb-[0-9a-f]{12}-\d{8}T\d{6}Z(-\d+)?\.db"


def counts(path: Path) -> dict[str, int]:
    """Rows of flow and flow_run in the file, read with sqlite3."""
    connection = sqlite3.connect(path)
    try:
        return {
            table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("flow", "flow_run")
        }
    finally:
        connection.close()


def backups(home: Path) -> list[Path]:
    """The files in the default backup folder, sorted by name."""
    folder = home / "backups"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """FLOWDB_HOME as the autouse fixture set it."""
    return tmp_path / "flowdb-home"


@pytest.fixture
def seeded(sqlite_url: str) -> str:
    """A SQLite database three revisions in, with one flow and 50 runs."""
    commands.migrate(Database.from_url(sqlite_url), "upgrade", "+3")
    seed_flow_runs(sqlite_url, 50)
    return sqlite_url


def test_an_upgrade_leaves_a_backup_that_restore_brings_back(seeded: str, home: Path) -> None:
    database = Database.from_url(seeded)
    path = database.dialect.backup_file()
    assert path is not None
    before_revision, before_counts = revision_of(seeded), counts(path)

    commands.migrate(database, "upgrade", "head")

    made = backups(home)
    assert len(made) == 1
    assert made[0].name.startswith(f"flowdb-{before_revision}-")
    assert made[0].read_bytes()[18:20] == b"\x01\x01"  # rollback journal: one self-contained file
    assert revision_of(seeded) == database.history.head
    connection = sqlite3.connect(path)
    connection.execute("DELETE FROM flow_run")
    connection.commit()
    connection.close()

    seen: list[backup.RestorePlan] = []
    restored = backup.restore(Database.from_url(seeded), None, lambda p: seen.append(p) or True)

    assert restored.source == made[0]
    assert revision_of(seeded) == before_revision
    assert counts(path) == before_counts == {"flow": 1, "flow_run": 50}
    assert seen[0].current.revision == database.history.head
    assert seen[0].current.rows["flow_run"] == 0
    assert seen[0].backup.rows["flow_run"] == 50
    # The database it replaced was backed up first, so the restore can be undone.
    assert restored.undo is not None and restored.undo.exists()
    assert restored.undo.name.startswith(f"flowdb-{database.history.head[:12]}-")
    assert counts(restored.undo) == {"flow": 1, "flow_run": 0}


def test_only_the_newest_n_backups_of_this_database_are_kept(
    seeded: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWDB_BACKUP_KEEP", "2")
    folder = home / "backups"
    folder.mkdir(parents=True)
    strangers = [
        folder / "notes.txt",
        folder / "other-c5d8e3f2a9b1-20200101T000000Z.db",  # another database's backup
        folder / "flowdb-copy.db",
    ]
    for stranger in strangers:
        stranger.write_text("not flowdb's")
    applied = []
    for _ in range(4):
        database = Database.from_url(seeded)
        applied.append(revision_of(seeded))
        commands.migrate(database, "upgrade", "+1")
        time.sleep(1.05)  # distinct names by the second, as real runs have

    kept = backup.backups_of(Database.from_url(seeded))
    assert [p.name.split("-")[1] for p in kept] == [applied[3], applied[2]]
    assert all(stranger.exists() for stranger in strangers)
    assert len(backups(home)) == 2 + len(strangers)


def test_keep_zero_turns_backups_off(
    seeded: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWDB_BACKUP_KEEP", "0")
    commands.migrate(Database.from_url(seeded), "upgrade", "head")
    assert revision_of(seeded) == Database.from_url(seeded).history.head
    assert backups(home) == []


def test_an_empty_database_a_dry_run_and_nothing_to_do_make_no_backup(
    sqlite_url: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = Database.from_url(sqlite_url)
    commands.migrate(database, "upgrade", "+2")  # an empty database: nothing to keep
    assert backups(home) == []
    seed_flow_runs(sqlite_url, 5)
    commands.preview(Database.from_url(sqlite_url), "upgrade", "head")
    assert "CREATE TABLE" in capsys.readouterr().out
    assert backups(home) == []
    commands.migrate(Database.from_url(sqlite_url), "upgrade", "head")
    assert len(backups(home)) == 1
    plan = commands.migrate(Database.from_url(sqlite_url), "upgrade", "head")  # at head
    assert plan.is_empty
    assert len(backups(home)) == 1


def test_a_declined_plan_makes_no_backup(seeded: str, home: Path) -> None:
    with pytest.raises(commands.Declined):
        commands.migrate(Database.from_url(seeded), "upgrade", "head", approve=lambda p, s: False)
    assert backups(home) == []


def test_a_backup_taken_while_another_connection_writes_is_consistent(
    seeded: str, tmp_path: Path
) -> None:
    """A writer in WAL mode commits 100 rows per transaction while copies are taken."""
    database = Database.from_url(seeded)
    path = database.dialect.backup_file()
    assert path is not None
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE scratch (batch INTEGER, n INTEGER, pad TEXT)")
    setup.executemany(
        "INSERT INTO scratch VALUES (0, ?, ?)", [(n, "x" * 500) for n in range(20_000)]
    )
    setup.commit()
    setup.close()
    stop = threading.Event()
    committed: list[int] = []

    def write() -> None:
        connection = sqlite3.connect(path, timeout=30)
        batch = 0
        while not stop.is_set():
            batch += 1
            connection.executemany(
                "INSERT INTO scratch VALUES (?, ?, ?)", [(batch, n, "y" * 500) for n in range(100)]
            )
            connection.commit()
            committed.append(batch)
        connection.close()

    writer = threading.Thread(target=write)
    writer.start()
    copies = []
    try:
        deadline = time.monotonic() + 60
        while not committed and time.monotonic() < deadline:
            time.sleep(0.01)
        for n in range(5):
            target = tmp_path / f"copy-{n}.db"
            backup.copy_database(path, target, timeout=30)
            copies.append(target)
    finally:
        stop.set()
        writer.join(timeout=60)
    assert not writer.is_alive()
    assert len(committed) > 1
    for target in copies:
        connection = sqlite3.connect(target)
        try:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            rows, batches = connection.execute(
                "SELECT count(*), count(DISTINCT batch) FROM scratch WHERE batch > 0"
            ).fetchone()
            # Whole transactions only: every batch in the copy has all its 100 rows.
            assert rows == 100 * batches
            assert counts(target) == {"flow": 1, "flow_run": 50}
        finally:
            connection.close()
        assert not Path(f"{target}-wal").exists()


def test_an_unwritable_backup_folder_stops_the_command_before_any_change(
    seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("FLOWDB_BACKUP_DIR", str(blocker / "backups"))
    before = revision_of(seeded)
    with pytest.raises(DatabaseReadOnlyError, match="FLOWDB_BACKUP_DIR") as raised:
        commands.migrate(Database.from_url(seeded), "upgrade", "head")
    assert "\n" not in str(raised.value)
    assert revision_of(seeded) == before


def test_restore_refuses_what_is_not_a_good_flowdb_backup(seeded: str, tmp_path: Path) -> None:
    database = Database.from_url(seeded)
    with pytest.raises(UsageError, match="No backups"):
        backup.restore(database, None, lambda p: True)
    with pytest.raises(UsageError, match="No backup file"):
        backup.restore(database, tmp_path / "missing.db", lambda p: True)

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(CorruptDatabaseError):
        backup.restore(database, garbage, lambda p: True)

    good = tmp_path / "good.db"
    backup.copy_database(database.dialect.backup_file() or Path(), good, timeout=5)
    damaged = tmp_path / "damaged.db"
    data = bytearray(good.read_bytes())
    page = 4096
    data[3 * page : 3 * page + 200] = b"\xff" * 200  # a b-tree page's header and cells
    damaged.write_bytes(bytes(data))
    with pytest.raises(CorruptDatabaseError):
        backup.restore(database, damaged, lambda p: True)

    foreign = tmp_path / "foreign.db"
    connection = sqlite3.connect(foreign)
    connection.execute("CREATE TABLE notes (x TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(ForeignDatabaseError, match="not a flowdb database"):
        backup.restore(database, foreign, lambda p: True)

    newer = tmp_path / "newer.db"
    backup.copy_database(good, newer, timeout=5)
    connection = sqlite3.connect(newer)
    connection.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    connection.commit()
    connection.close()
    with pytest.raises(DatabaseNewerThanCodeError, match="ffffffffffff"):
        backup.restore(database, newer, lambda p: True)

    assert revision_of(seeded) == database.history.revisions[2].id  # untouched throughout


def test_a_declined_restore_changes_nothing(seeded: str, home: Path) -> None:
    commands.migrate(Database.from_url(seeded), "upgrade", "+1")
    after = revision_of(seeded)
    with pytest.raises(commands.Declined):
        backup.restore(Database.from_url(seeded), None, lambda p: False)
    assert revision_of(seeded) == after
    assert len(backups(home)) == 1


@pytest.mark.parametrize("fixture", ["postgres_url", "mariadb_url"])
def test_a_server_downgrade_plan_names_its_dump_command(
    fixture: str, request: pytest.FixtureRequest, home: Path
) -> None:
    url = str(request.getfixturevalue(fixture))
    database = Database.from_url(url)
    commands.migrate(database, "upgrade", "head")
    status = database.status()
    plan = make_plan(database.history, "downgrade", status.current, "-1")
    lines = describe_plan(database, plan, status)
    name = str(database.url.url.database)
    tool = "pg_dump" if fixture == "postgres_url" else "mariadb-dump"
    dump = [line for line in lines if tool in line]
    assert len(dump) == 1, lines
    assert name in dump[0] and "127.0.0.1" in dump[0]
    assert backups(home) == []  # servers are not copied by flowdb
    with_password = Database.from_url(url.replace("@127.0.0.1", ":s3cret@127.0.0.1"))
    command = with_password.dialect.dump_command()
    assert command is not None and "s3cret" not in command and name in command


def test_a_connection_open_during_a_restore_sees_the_restored_database(
    seeded: str, home: Path
) -> None:
    """A server's connection (WAL, kept open) reads the backup's rows after the restore."""
    database = Database.from_url(seeded)
    path = database.dialect.backup_file()
    assert path is not None
    before = revision_of(seeded)
    commands.migrate(database, "upgrade", "head")
    server = sqlite3.connect(path, isolation_level=None)
    try:
        assert server.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        server.execute("DELETE FROM flow_run")
        assert server.execute("SELECT version_num FROM alembic_version").fetchone()[0] == (
            database.history.head
        )

        backup.restore(Database.from_url(seeded), None, lambda p: True)

        assert server.execute("SELECT version_num FROM alembic_version").fetchone()[0] == before
        assert server.execute("SELECT count(*) FROM flow_run").fetchone()[0] == 50
        assert server.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert server.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        server.close()
    assert counts(path) == {"flow": 1, "flow_run": 50}

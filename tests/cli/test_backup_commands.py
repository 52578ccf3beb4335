"""Backups and ``flowdb database restore`` as operators run them: a subprocess, no terminal.

Each test has its own SQLite file and FLOWDB_HOME; what the commands say is checked
against the files they leave, read without flowdb.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from flowdb.database.history import load_history
from tests.cli.helpers import (
    assert_cannot_write,
    assert_one_line_error,
    current_revision,
    drop_write_override,
    fingerprint,
    flowdb,
    ok,
)
from tests.dbtools import seed_flow_runs

HEAD = load_history().head


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """FLOWDB_HOME for the subprocess."""
    return tmp_path / "home"


@pytest.fixture
def seeded(tmp_path: Path, home: Path) -> str:
    """A SQLite file three revisions in, with a flow and 8,000 runs (about 2.5 MB)."""
    url = f"sqlite:///{tmp_path / 'db' / 'flowdb.db'}"
    (tmp_path / "db").mkdir()
    ok(flowdb(url, "database", "upgrade", "-y", "-r", "+3", home=home))
    seed_flow_runs(url, 8_000)
    return url


def run_count(url: str) -> int:
    """Rows of flow_run, read with sqlite3."""
    connection = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return int(connection.execute("SELECT count(*) FROM flow_run").fetchone()[0])
    finally:
        connection.close()


def test_upgrade_says_where_its_backup_is_and_restore_brings_it_back(
    seeded: str, home: Path
) -> None:
    before = current_revision(seeded)
    result = ok(flowdb(seeded, "database", "upgrade", "-y", home=home))
    lines = [line for line in result.stdout.splitlines() if line.startswith("Backed up")]
    assert len(lines) == 1, result.stdout
    written = Path(lines[0].split(" to ")[1].split(" before ")[0])
    assert written.parent == home / "backups" and written.exists()
    assert current_revision(seeded) == HEAD

    refused = flowdb(seeded, "database", "restore", home=home)
    assert refused.returncode == 2
    assert_one_line_error(refused, "--yes")
    assert current_revision(seeded) == HEAD

    restored = ok(flowdb(seeded, "database", "restore", "-y", home=home))
    assert f"at {before}" in restored.stdout  # the plan: the backup's side
    assert f"at {HEAD}" in restored.stdout  # and what it replaces
    assert current_revision(seeded) == before
    assert run_count(seeded) == 8_000
    assert "to undo: flowdb database restore" in restored.stderr
    assert "Backed up" in restored.stdout


def test_restore_refuses_bad_files_in_one_line(seeded: str, home: Path, tmp_path: Path) -> None:
    assert_one_line_error(flowdb(seeded, "database", "restore", "-y", home=home), "No backups")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database " * 500)
    result = flowdb(seeded, "database", "restore", str(garbage), "-y", home=home)
    assert result.returncode == 9
    assert_one_line_error(result, str(garbage))
    foreign = tmp_path / "foreign.db"
    connection = sqlite3.connect(foreign)
    connection.execute("CREATE TABLE notes (x TEXT)")
    connection.commit()
    connection.close()
    result = flowdb(seeded, "database", "restore", str(foreign), "-y", home=home)
    assert result.returncode == 7
    assert_one_line_error(result, "not a flowdb database")
    result = flowdb(seeded, "database", "restore", str(tmp_path / "nope.db"), "-y", home=home)
    assert result.returncode == 2
    assert_one_line_error(result, "nope.db")


def test_a_full_disk_stops_the_upgrade_before_any_change(
    seeded: str, home: Path, tmp_path: Path
) -> None:
    """The backup folder is a 512 KiB tmpfs: the copy of a 2.5 MB database cannot fit."""
    database = Path(seeded.removeprefix("sqlite:///"))
    assert database.stat().st_size > 4 * 512 * 1024
    before = fingerprint(seeded)
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert mounted.returncode == 0, f"this test mounts a small tmpfs (root): {mounted.stderr}"
    try:
        result = flowdb(
            seeded, "database", "upgrade", "-y", home=home, env={"FLOWDB_BACKUP_DIR": str(disk)}
        )
        assert result.returncode == 5, result.stderr
        assert_one_line_error(result, "no space left", "FLOWDB_BACKUP_DIR")
        assert fingerprint(seeded) == before
        assert list(disk.iterdir()) == []  # no partial copy left
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_an_unwritable_backup_folder_stops_the_upgrade_before_any_change(
    seeded: str, home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "read-only-backups"
    folder.mkdir()
    os.chmod(folder, 0o555)
    try:
        assert_cannot_write(folder)
        before = fingerprint(seeded)
        result = flowdb(
            seeded,
            "database",
            "upgrade",
            "-y",
            home=home,
            env={"FLOWDB_BACKUP_DIR": str(folder)},
            preexec_fn=drop_write_override,
        )
        assert result.returncode == 4, result.stderr
        assert_one_line_error(result, str(folder), "FLOWDB_BACKUP_KEEP=0")
        assert fingerprint(seeded) == before
    finally:
        os.chmod(folder, 0o755)


def test_keep_zero_upgrades_without_a_backup(seeded: str, home: Path) -> None:
    result = ok(
        flowdb(seeded, "database", "upgrade", "-y", home=home, env={"FLOWDB_BACKUP_KEEP": "0"})
    )
    assert "Backed up" not in result.stdout + result.stderr
    assert current_revision(seeded) == HEAD
    assert not (home / "backups").exists()


def test_a_postgresql_downgrade_plan_names_pg_dump(postgres_url: str, home: Path) -> None:
    ok(flowdb(postgres_url, "database", "upgrade", "-y", home=home))
    result = ok(flowdb(postgres_url, "database", "downgrade", "-y", home=home))
    lines = [line for line in result.stdout.splitlines() if "pg_dump" in line]
    assert len(lines) == 1, result.stdout
    assert postgres_url.rsplit("/", 1)[1] in lines[0]

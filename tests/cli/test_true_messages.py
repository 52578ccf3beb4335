"""Messages that are true: what committed before a full disk, a dry run that refuses like the run.

The full disk is real: a small tmpfs mounted in a mount namespace of the flowdb process
(``unshare -m``), holding the SQLite file, so SQLite's own writes run out of space part
way through the replay.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowdb.database import commands
from flowdb.database.history import load_history
from flowdb.database.target import Database
from flowdb.errors import ExitCode
from tests.dbtools import seed_flow_runs

IDS = [revision.id for revision in load_history().revisions]
START = IDS[1]
POSITION = re.compile(
    r"(?P<done>\d+) of the (?P<steps>\d+) migration\(s\) of this upgrade committed; "
    r"the database is at (?P<at>\w+)(?:, with (?P<kept>.+) kept for the next run)?\.$"
)


def upgrade_on_a_small_disk(prepared: Path, folder: Path, kilobytes: int) -> tuple[int, str, Path]:
    """``upgrade -y`` of a copy of ``prepared`` on a ``kilobytes`` tmpfs; the file copied back."""
    if shutil.which("unshare") is None:
        pytest.fail("this test needs unshare(1) (util-linux) to mount a small tmpfs")
    mount = folder / f"disk{kilobytes}"
    mount.mkdir()
    after = folder / f"after{kilobytes}.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    env.update(FLOWDB_DATABASE_URL=f"sqlite:///{mount}/flowdb.db", FLOWDB_HOME=str(mount))
    # The backup taken before the upgrade goes elsewhere: the migration fills this disk.
    env.update(FLOWDB_BACKUP_DIR=str(folder / f"backups{kilobytes}"))
    script = (
        f"mount -t tmpfs -o size={kilobytes}k tmpfs {mount} && cp {prepared} {mount}/flowdb.db"
        f" && {sys.executable} -m flowdb database upgrade -y; code=$?;"
        # In WAL mode committed pages may still be in the -wal file: it comes along.
        f" cp {mount}/flowdb.db {after};"
        f" if [ -e {mount}/flowdb.db-wal ]; then cp {mount}/flowdb.db-wal {after}-wal; fi;"
        " exit $code"
    )
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert "Operation not permitted" not in result.stderr, result.stderr
    return result.returncode, result.stderr, after


def test_a_full_disk_part_way_through_a_replay_says_what_committed(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared.db"
    url = f"sqlite:///{prepared}"
    commands.migrate(Database.from_url(url), "upgrade", START, use_snapshot=False)
    seed_flow_runs(url, 2000)
    size = prepared.stat().st_size // 1024
    part_way = []
    # Room for the file and a little more, then for about two copies of it: the first
    # fills up in the first migrations, the second inside a data migration's phases.
    for kilobytes in (size * 3 // 2, size * 10 // 3):
        code, stderr, after = upgrade_on_a_small_disk(prepared, tmp_path, kilobytes)

        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == ExitCode.DISK_FULL, stderr
        assert "Traceback" not in stderr
        assert lines[-1].startswith("Error: The disk holding the SQLite database"), stderr
        assert "nothing was changed" not in stderr
        position = POSITION.search(lines[-1])
        assert position is not None, lines[-1]
        status = Database.from_url(f"sqlite:///{after}").status()
        assert position["at"] == status.current, lines[-1]
        assert int(position["done"]) == IDS.index(status.current) - IDS.index(START)
        assert int(position["steps"]) == len(IDS) - 1 - IDS.index(START)
        assert (position["kept"] or "") == status.describe_progress(), lines[-1]
        if int(position["done"]) > 0:
            part_way.append(kilobytes)
    assert part_way, "the disk never filled after a migration committed"


# --- a fresh install that replays says why ---------------------------------------------------

HEAD = IDS[-1]
EXTRA = f'''"""Change nothing: a revision only this test's history has."""

revision: str = "7e57fee10001"
down_revision: str | None = "{HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''


def copied_history(tmp_path: Path) -> Path:
    """A copy of the migrations folder (this test's history); returns the folder."""
    from flowdb.database import history

    copy = tmp_path / "migrations"
    shutil.copytree(history.MIGRATIONS_FOLDER, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def replay_line(stderr: str) -> str:
    """The one line that says why the history is replayed."""
    lines = [line for line in stderr.splitlines() if line.startswith("Replaying the history")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_fresh_install_with_a_newer_history_than_the_snapshot_says_why_it_replays(
    sqlite_url: str, tmp_path: Path
) -> None:
    from tests.cli.helpers import flowdb, ok

    migrations = copied_history(tmp_path)
    (migrations / "versions" / "2026_12_31_7e57fee10001_nothing.py").write_text(EXTRA)

    result = ok(flowdb(sqlite_url, "database", "upgrade", "-y", migrations=migrations))

    line = replay_line(result.stderr)
    assert "sqlite.sql" in line and HEAD in line and "7e57fee10001" in line, line
    assert "flowdb database snapshot" in line
    assert "Installed the head schema" not in result.stderr


def test_a_fresh_install_with_edited_revision_files_says_why_it_replays(
    sqlite_url: str, tmp_path: Path
) -> None:
    from tests.cli.helpers import flowdb, ok

    migrations = copied_history(tmp_path)
    edited = next((migrations / "versions").glob(f"*_{IDS[2]}_*.py"))
    edited.write_text(edited.read_text() + "\n# edited after the snapshot was made\n")

    result = ok(flowdb(sqlite_url, "database", "upgrade", "-y", migrations=migrations))

    line = replay_line(result.stderr)
    assert "revision files differ" in line and "sqlite.sql" in line, line


def test_a_fresh_install_to_a_revision_before_head_says_why_it_replays(sqlite_url: str) -> None:
    from tests.cli.helpers import flowdb, ok

    result = ok(flowdb(sqlite_url, "database", "upgrade", "-y", "-r", IDS[3]))

    line = replay_line(result.stderr)
    assert f"goes to {IDS[3]}" in line and HEAD in line, line


def test_a_fresh_install_on_a_mysql_url_says_there_is_no_snapshot(mariadb_url: str) -> None:
    from tests.cli.helpers import flowdb, ok

    url = mariadb_url.replace("mariadb+pymysql://", "mysql+pymysql://", 1)
    assert url.startswith("mysql+pymysql://"), url

    result = ok(flowdb(url, "database", "upgrade", "-y"))

    line = replay_line(result.stderr)
    assert "no snapshot for MySQL (mysql.sql)" in line, line


def test_a_fresh_install_from_the_snapshot_says_nothing_of_a_replay(sqlite_url: str) -> None:
    from tests.cli.helpers import flowdb, ok

    result = ok(flowdb(sqlite_url, "database", "upgrade", "-y"))

    assert "Installed the head schema" in result.stderr
    assert "Replaying" not in result.stderr

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
    script = (
        f"mount -t tmpfs -o size={kilobytes}k tmpfs {mount} && cp {prepared} {mount}/flowdb.db"
        f" && {sys.executable} -m flowdb database upgrade -y; code=$?;"
        f" cp {mount}/flowdb.db {after}; exit $code"
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

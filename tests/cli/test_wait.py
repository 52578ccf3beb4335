"""``flowdb database wait``: exit 0 as soon as the database is at head, one line otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.helpers import flowdb, ok


def test_wait_returns_at_once_at_head(database_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(flowdb(database_url, "database", "upgrade", "-y", home=home))

    started = time.monotonic()
    result = ok(flowdb(database_url, "database", "wait", "--timeout", "30", home=home))

    assert time.monotonic() - started < 20
    assert "is at head" in result.stdout  # the result: stdout


def test_wait_ends_when_a_migration_job_reaches_head(database_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"FLOWDB_DATABASE_URL": database_url, "FLOWDB_HOME": str(home)}
    waiting = subprocess.Popen(
        [sys.executable, "-m", "flowdb", "database", "wait", "--timeout", "120"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        assert waiting.poll() is None, "wait ended before the database was at head"
        ok(flowdb(database_url, "database", "upgrade", "-y", home=home))
        stdout, stderr = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, stderr
    assert "is at head" in stdout

"""Case 1: how long an operator waits for the CLI to start.

``flowdb --help`` must not pay for SQLAlchemy or Alembic; ``flowdb database current``
needs SQLAlchemy and the settings but not Alembic.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.common import PYTHON, Row, interleaved, run
from bench.databases import Scratch, flowdb_env


def _flowdb_command() -> list[str]:
    script = Path(PYTHON).with_name("flowdb")
    return [str(script)] if script.exists() else [shutil.which("flowdb") or "flowdb"]


def bench_startup(scratch: Scratch, repeat: int) -> list[Row]:
    """Time the CLI's start-up against a bare interpreter and against importing Alembic."""
    url = scratch.sqlite_url()
    env = flowdb_env(url, home=scratch.folder / "home")
    run([PYTHON, "-m", "flowdb", "database", "upgrade", "-y"], env=env)
    flowdb = _flowdb_command()

    def call(args: list[str]) -> None:
        subprocess.run(args, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)

    timings = interleaved(
        {
            "python -c pass": lambda: call([PYTHON, "-c", "pass"]),
            "import alembic.command": lambda: call([PYTHON, "-c", "import alembic.command"]),
            "flowdb --help": lambda: call([*flowdb, "--help"]),
            "flowdb database current": lambda: call([*flowdb, "database", "current"]),
        },
        repeat,
    )
    bare, alembic = timings["python -c pass"], timings["import alembic.command"]
    return [
        Row("flowdb --help", timings["flowdb --help"], "python -c pass", bare, limit=0.15),
        Row(
            "flowdb --help",
            timings["flowdb --help"],
            "import alembic.command",
            alembic,
            note="below 1× means faster than importing Alembic alone",
        ),
        Row(
            "flowdb database current (SQLite at head)",
            timings["flowdb database current"],
            "python -c pass",
            bare,
            limit=0.5,
        ),
        Row(
            "flowdb database current (SQLite at head)",
            timings["flowdb database current"],
            "import alembic.command",
            alembic,
        ),
    ]

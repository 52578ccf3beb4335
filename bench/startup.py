"""Case 1: how long an operator waits for the CLI to start, and what a command adds to it.

Every case is a fresh process on SQLite, timed interleaved: ``python -c pass``, the SQL
floor (the head snapshot run through bare ``sqlite3`` on an empty file: the least any
tool could cost), ``flowdb --help``, an empty database to head (the fresh install),
``upgrade`` at head and ``current`` at head. Targets (issue 22): empty -> head at most
2x ``--help``, ``upgrade`` at head at most 1.5x ``--help``, ``current`` no slower than
``upgrade`` at head.

The processes run with bytecode caches written (``PYTHONDONTWRITEBYTECODE`` unset, one
warm-up round), as an installed flowdb has them; without them every run compiles
flowdb's own modules and revision files again.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from bench.common import PYTHON, Row, interleaved, run
from bench.databases import Scratch, flowdb_env

SNAPSHOT = Path(__file__).parents[1] / "src/flowdb/database/snapshots/sqlite.sql"


def _flowdb_command() -> list[str]:
    script = Path(PYTHON).with_name("flowdb")
    return [str(script)] if script.exists() else [shutil.which("flowdb") or "flowdb"]


def bench_startup(scratch: Scratch, repeat: int) -> list[Row]:
    """Time the CLI's start-up and its SQLite commands against ``--help`` and the floor."""
    home = scratch.folder / "home"
    at_head = flowdb_env(scratch.sqlite_url(), home=home)
    at_head.pop("PYTHONDONTWRITEBYTECODE", None)
    run([PYTHON, "-m", "flowdb", "database", "upgrade", "-y"], env=at_head)
    flowdb = _flowdb_command()
    fresh_files = (scratch.folder / f"fresh-{n}.db" for n in itertools.count())

    def call(args: list[str], env: dict[str, str] = at_head) -> None:
        subprocess.run(args, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)

    def empty_to_head() -> None:
        env = {**at_head, "FLOWDB_DATABASE_URL": f"sqlite:///{next(fresh_files)}"}
        call([*flowdb, "database", "upgrade", "-y"], env)

    def floor() -> None:
        call([PYTHON, "-m", "bench.floor", f"sqlite:///{next(fresh_files)}", str(SNAPSHOT)])

    cases: dict[str, Callable[[], object]] = {
        "python -c pass": lambda: call([PYTHON, "-c", "pass"]),
        "SQL floor": floor,
        "flowdb --help": lambda: call([*flowdb, "--help"]),
        "empty -> head": empty_to_head,
        "upgrade at head": lambda: call([*flowdb, "database", "upgrade", "-y"]),
        "current at head": lambda: call([*flowdb, "database", "current"]),
    }
    interleaved(cases, 1)  # warm-up: bytecode caches written, files in the page cache
    timings = interleaved(cases, repeat)
    bare, help_ = timings["python -c pass"], timings["flowdb --help"]
    return [
        Row("flowdb --help", help_, "python -c pass", bare),
        Row("SQL floor (snapshot through sqlite3)", timings["SQL floor"], "python -c pass", bare),
        Row(
            "flowdb database upgrade -y (SQLite, empty -> head)",
            timings["empty -> head"],
            "flowdb --help",
            help_,
            target=2.0,
        ),
        Row(
            "flowdb database upgrade -y (SQLite, empty -> head)",
            timings["empty -> head"],
            "SQL floor",
            timings["SQL floor"],
        ),
        Row(
            "flowdb database upgrade -y (SQLite at head)",
            timings["upgrade at head"],
            "flowdb --help",
            help_,
            target=1.5,
        ),
        Row(
            "flowdb database current (SQLite at head)",
            timings["current at head"],
            "flowdb --help",
            help_,
        ),
        Row(
            "flowdb database current (SQLite at head)",
            timings["current at head"],
            "upgrade -y at head",
            timings["upgrade at head"],
            target=1.0,
        ),
    ]

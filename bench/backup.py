"""Case 10: the backup a SQLite database gets before a change, against ``cp`` of the file.

A database with many flow runs (plus task runs and logs, built in bulk by
``data_migrations.build_database``) is copied again and again, interleaved: by ``cp``
(a new process, as an operator would, and not safe while a server writes), by
``shutil.copyfile`` in the same process (the floor of copying its bytes), and by
flowdb's ``backup.copy_database`` (SQLite's online backup API, consistent while the
server writes), the copy every schema change makes first.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from bench.common import Row, interleaved, run
from bench.data_migrations import build_database
from bench.databases import Scratch


def bench_backup(scratch: Scratch, repeat: int, runs: int) -> list[Row]:
    """Time the online backup and ``shutil.copyfile`` of a database against ``cp``."""
    from flowdb.database.backup import copy_database

    url = build_database(scratch, "sqlite", runs)
    source = Path(url.removeprefix("sqlite:///"))
    target = scratch.folder / "backup-target.db"

    def cp() -> None:
        run(["cp", str(source), str(target)])

    def copyfile() -> None:
        shutil.copyfile(source, target)

    def online() -> None:
        copy_database(source, target, timeout=60)

    def clear() -> None:
        target.unlink(missing_ok=True)

    cases: dict[str, Callable[[], object]] = {
        "cp": cp,
        "shutil.copyfile": copyfile,
        "backup API (flowdb's backup)": online,
    }
    timings = interleaved(cases, repeat, setup=clear)
    clear()
    baseline = timings.pop("cp")
    size = source.stat().st_size / 1024 / 1024
    note = f"{runs:,} flow runs, {size:.0f} MiB"
    rows = [Row(name, timing, "cp", baseline, note=note) for name, timing in timings.items()]
    scratch.drop(url)
    return rows

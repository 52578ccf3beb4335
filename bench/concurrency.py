"""Case 4: many callers upgrading one fresh database at once, against one caller alone.

With the migration lock one caller migrates and the rest wait and then find the
database at head, so the crowd should cost little more than the single upgrade.
"""

from __future__ import annotations

import subprocess
from functools import partial

from bench.common import PYTHON, Row, interleaved, run
from bench.databases import Scratch, flowdb_env

UPGRADE = [PYTHON, "-m", "flowdb", "database", "upgrade", "-y"]
CURRENT = [PYTHON, "-m", "flowdb", "database", "current"]


def _processes(url: str, command: list[str], count: int) -> None:
    """Start ``count`` copies of ``command`` at once and wait for all; fail if any failed."""
    env = flowdb_env(url)
    children = [
        subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    errors = [child.communicate()[1] for child in children]
    failed = [error for child, error in zip(children, errors, strict=True) if child.returncode]
    if failed:
        raise RuntimeError(f"{len(failed)} of {count} runs of {command} failed: {failed[0]}")


def bench_concurrency(
    scratch: Scratch, repeat: int, processes: int = 8, threads: int = 32
) -> list[Row]:
    """Time 1 upgrade, ``processes`` processes and ``threads`` threads, per dialect."""
    rows: list[Row] = []
    for dialect in ("sqlite", "postgresql", "mariadb"):
        rows += _bench_dialect(scratch, dialect, repeat, processes, threads)
    return rows


def _bench_dialect(
    scratch: Scratch, dialect: str, repeat: int, processes: int, threads: int
) -> list[Row]:
    from flowdb.database import commands
    from flowdb.database.target import Database

    new_url = partial(scratch.new_url, dialect)
    urls: dict[str, str] = {}
    names = ("single", "processes", "threads", "current")

    def fresh() -> None:
        for name in names:
            if name in urls:
                scratch.drop(urls[name])
            urls[name] = new_url()
        # Set-up, not measured: `current`'s database at head, upgraded in this process.
        commands.migrate(Database.from_url(urls["current"]), "upgrade", "head")

    timings = interleaved(
        {
            "single": lambda: run(UPGRADE, env=flowdb_env(urls["single"])),
            "processes": lambda: _processes(urls["processes"], UPGRADE, processes),
            "threads": lambda: run(
                [PYTHON, "-m", "bench.thread_upgrade", str(threads)],
                env=flowdb_env(urls["threads"]),
            ),
            "current": lambda: _processes(urls["current"], CURRENT, processes),
        },
        repeat,
        setup=fresh,
    )
    for url in urls.values():
        scratch.drop(url)
    single = timings["single"]
    return [
        Row(
            f"{dialect}: {processes} processes",
            timings["processes"],
            "1 upgrade",
            single,
            target=1.5,
        ),
        Row(
            f"{dialect}: {processes} processes",
            timings["processes"],
            f"{processes} × `current` at head",
            timings["current"],
            note=f"the baseline is the cost of starting {processes} flowdb processes here",
        ),
        Row(f"{dialect}: {threads} threads", timings["threads"], "1 upgrade", single, target=1.5),
    ]

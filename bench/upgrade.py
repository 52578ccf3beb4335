"""Case 2: an empty database to head, against running the same SQL through the driver.

Two pairs per dialect: the CLI and the floor each as a fresh process (what an operator
waits for), and the Python API and the floor inside one warm process (what migrating
itself costs, without interpreter and import start-up).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

from bench.common import PYTHON, Row, Timing, interleaved, run, time_call
from bench.databases import Scratch, execute_script, flowdb_env
from bench.sql import dry_run_sql, single_transaction, write_script


def bench_upgrade(scratch: Scratch, repeat: int, warm_up: bool = True) -> list[Row]:
    """Time empty-to-head on SQLite, PostgreSQL and MariaDB against the floor.

    ``warm_up``: one untimed in-process upgrade first (the one-off imports); the tiny run
    skips it (it proves the case runs, not its numbers).
    """
    rows: list[Row] = []
    for dialect in ("sqlite", "postgresql", "mariadb"):
        rows += _bench_dialect(scratch, dialect, repeat, warm_up)
    return rows


def _bench_dialect(scratch: Scratch, dialect: str, repeat: int, warm_up: bool) -> list[Row]:
    new_url = partial(scratch.new_url, dialect)
    sql = single_transaction(dry_run_sql(new_url(), "base:head"))
    script = write_script(scratch.folder, f"head-{dialect}.sql", sql)
    targets: dict[str, str] = {}

    def fresh() -> None:
        for name in ("cli", "floor"):
            if name in targets:
                scratch.drop(targets[name])
            targets[name] = new_url()

    def cli() -> None:
        run([PYTHON, "-m", "flowdb", "database", "upgrade", "-y"], env=flowdb_env(targets["cli"]))

    def floor() -> None:
        run([PYTHON, "-m", "bench.floor", targets["floor"], str(script)])

    timings = interleaved({"cli": cli, "floor": floor}, repeat, setup=fresh)
    for url in targets.values():
        scratch.drop(url)
    api, floor_in_process = _in_process(scratch, new_url, sql, repeat, warm_up)
    target = 2.0 if dialect == "sqlite" else None
    return [
        Row(
            f"{dialect}: flowdb database upgrade -y",
            timings["cli"],
            "driver script, new process",
            timings["floor"],
            target=target,
        ),
        Row(
            f"{dialect}: alembic_upgrade() in-process",
            api,
            "driver script, in-process",
            floor_in_process,
            target=target,
        ),
    ]


def _in_process(
    scratch: Scratch, new_url: Callable[[], str], sql: str, repeat: int, warm_up: bool
) -> tuple[Timing, Timing]:
    """Time ``alembic_upgrade()`` and the floor inside this (warm) process."""
    from flowdb.database.alembic_commands import alembic_upgrade

    def api_on(url: str) -> None:
        os.environ["FLOWDB_DATABASE_URL"] = url
        alembic_upgrade()

    previous = os.environ.get("FLOWDB_DATABASE_URL")
    api, floor = Timing(), Timing()
    try:
        if warm_up:
            warm = new_url()
            api_on(warm)  # pays the one-off imports outside the measurement
            scratch.drop(warm)

        def floor_on(url: str) -> None:
            execute_script(url, sql)

        actions: list[tuple[Timing, Callable[[str], None]]] = [(api, api_on), (floor, floor_on)]
        for _ in range(repeat):
            for timing, action in actions:
                url = new_url()
                timing.samples.append(time_call(partial(action, url)))
                scratch.drop(url)
    finally:
        os.environ.pop("FLOWDB_DATABASE_URL", None)
        if previous is not None:
            os.environ["FLOWDB_DATABASE_URL"] = previous
    return api, floor

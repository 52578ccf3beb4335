"""Case 3: the data migrations on a big database, against the same statements run by hand.

A database is built at the revision just before the data migrations and filled in
bulk by SQL (never row by row through Python). Copies of it are then migrated across
the three data migrations on the big tables, once by ``flowdb database upgrade`` and
once by replaying the dry-run SQL of that span through the bare driver in one
transaction (the floor). Both run as fresh processes so their peak memory (max RSS)
can be read; at two sizes, to show whether memory grows with the row count.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

from bench.common import PYTHON, Row, Timing, run, run_measuring_memory
from bench.databases import Scratch, flowdb_env
from bench.sql import dry_run_sql, single_transaction, write_script

BEFORE = "2c9f4d1a8e65"  # the revision before the data migrations
AFTER = "5f3c7a9d2b18"  # after backfill, task key split and state history move

_SQLITE_FILL = [
    "INSERT INTO flow (id, name) WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 "
    "FROM k WHERE i < 9) SELECT printf('%032x', i), 'flow-' || i FROM k",
    "INSERT INTO flow_run (id, flow_id, name, state_type, state_name, state_timestamp, "
    "state_message, start_time) WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k "
    "WHERE i < :runs) SELECT lower(hex(randomblob(16))), printf('%032x', i % 10), 'run-' || i, "
    "CASE i % 3 WHEN 0 THEN 'COMPLETED' WHEN 1 THEN 'RUNNING' END, "
    "CASE i % 3 WHEN 0 THEN 'Completed' WHEN 1 THEN 'Running' END, "
    "CASE WHEN i % 3 < 2 THEN datetime('now', '-' || i || ' seconds') END, "
    "CASE WHEN i % 3 = 0 THEN 'finished after ' || i || ' steps' END, "
    "CASE WHEN i % 4 > 0 THEN datetime('now', '-' || i || ' seconds') END FROM k",
    "INSERT INTO task_run (id, flow_run_id, task_key, name, state_type) "
    "SELECT lower(hex(randomblob(16))), id, 'task-' || (rowid % 7) || ':' || rowid, 'task', "
    "state_type FROM flow_run WHERE rowid <= :tasks",
    "INSERT INTO log (id, name, level, flow_run_id, message, timestamp) "
    "SELECT lower(hex(randomblob(16))), 'flowdb.run', 20, id, 'line ' || n.n, CURRENT_TIMESTAMP "
    "FROM flow_run, (SELECT 1 AS n UNION ALL SELECT 2) AS n",
]

_POSTGRES_FILL = [
    "INSERT INTO flow (id, name) SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(i), 12, '0'))"
    "::uuid, 'flow-' || i FROM generate_series(0, 9) AS i",
    "INSERT INTO flow_run (id, flow_id, name, state_type, state_name, state_timestamp, "
    "state_message, start_time) SELECT gen_random_uuid(), ('00000000-0000-0000-0000-' || "
    "lpad(to_hex(i % 10), 12, '0'))::uuid, 'run-' || i, "
    "(CASE i % 3 WHEN 0 THEN 'COMPLETED' WHEN 1 THEN 'RUNNING' END)::state_type, "
    "CASE i % 3 WHEN 0 THEN 'Completed' WHEN 1 THEN 'Running' END, "
    "CASE WHEN i % 3 < 2 THEN now() - make_interval(secs => i) END, "
    "CASE WHEN i % 3 = 0 THEN 'finished after ' || i || ' steps' END, "
    "CASE WHEN i % 4 > 0 THEN now() - make_interval(secs => i) END "
    "FROM generate_series(1, :runs) AS i",
    "INSERT INTO task_run (id, flow_run_id, task_key, name, state_type) "
    "SELECT gen_random_uuid(), id, 'task-' || (n % 7) || ':' || n, 'task', state_type "
    "FROM (SELECT id, state_type, row_number() OVER () AS n FROM flow_run LIMIT :tasks) AS r",
    "INSERT INTO log (id, name, level, flow_run_id, message, timestamp) "
    "SELECT gen_random_uuid(), 'flowdb.run', 20, id, 'line ' || n, now() "
    "FROM flow_run, generate_series(1, 2) AS n",
    "ANALYZE",
]

#: MariaDB: the sequence engine's ``seq_1_to_N`` tables stand in for generate_series.
_MARIADB_FILL = [
    "INSERT INTO flow (id, name) SELECT LPAD(HEX(seq), 32, '0'), CONCAT('flow-', seq) "
    "FROM seq_0_to_9",
    "INSERT INTO flow_run (id, flow_id, name, state_type, state_name, state_timestamp, "
    "state_message, start_time) SELECT REPLACE(UUID(), '-', ''), LPAD(HEX(seq % 10), 32, '0'), "
    "CONCAT('run-', seq), CASE seq % 3 WHEN 0 THEN 'COMPLETED' WHEN 1 THEN 'RUNNING' END, "
    "CASE seq % 3 WHEN 0 THEN 'Completed' WHEN 1 THEN 'Running' END, "
    "CASE WHEN seq % 3 < 2 THEN UTC_TIMESTAMP(6) - INTERVAL seq SECOND END, "
    "CASE WHEN seq % 3 = 0 THEN CONCAT('finished after ', seq, ' steps') END, "
    "CASE WHEN seq % 4 > 0 THEN UTC_TIMESTAMP(6) - INTERVAL seq SECOND END "
    "FROM seq_1_to_{runs}",
    "INSERT INTO task_run (id, flow_run_id, task_key, name, state_type) "
    "SELECT REPLACE(UUID(), '-', ''), id, CONCAT('task-', n % 7, ':', n), 'task', state_type "
    "FROM (SELECT id, state_type, ROW_NUMBER() OVER () AS n FROM flow_run LIMIT {tasks}) AS r",
    "INSERT INTO log (id, name, level, flow_run_id, message, timestamp) "
    "SELECT REPLACE(UUID(), '-', ''), 'flowdb.run', 20, id, CONCAT('line ', n.seq), "
    "UTC_TIMESTAMP(6) FROM flow_run, seq_1_to_2 AS n",
]
DIALECTS = ("sqlite", "postgresql", "mariadb")


def build_database(scratch: Scratch, dialect: str, runs: int, before: str = BEFORE) -> str:
    """A database at ``before`` with ``runs`` flow runs, runs/5 task runs and 2×runs logs."""
    url = scratch.new_url(dialect)
    run([PYTHON, "-m", "flowdb", "database", "upgrade", "-y", "-r", before], env=flowdb_env(url))
    from flowdb.database.target import Database

    engine = sa.create_engine(Database.from_url(url).dialect.sync_url)
    try:
        with engine.begin() as connection:
            fill = {"sqlite": _SQLITE_FILL, "mariadb": _MARIADB_FILL}.get(dialect, _POSTGRES_FILL)
            for statement in fill:
                sql = statement.format(runs=runs, tasks=runs // 5)
                connection.execute(sa.text(sql), {"runs": runs, "tasks": runs // 5})
    finally:
        engine.dispose()
    return url


def _prepare(scratch: Scratch, dialect: str, runs: int) -> tuple[str, Path]:
    """A template database of ``runs`` flow runs at ``BEFORE``, and the floor's script."""
    template = build_database(scratch, dialect, runs)
    sql = single_transaction(dry_run_sql(template, f"{BEFORE}:{AFTER}"))
    return template, write_script(scratch.folder, f"data-{dialect}-{runs}.sql", sql)


def bench_data_migrations(
    scratch: Scratch, sizes: tuple[int, ...], repeat: int, dialects: tuple[str, ...] = DIALECTS
) -> list[Row]:
    """Time flowdb against the floor across the data migrations, per dialect and size."""
    rows: dict[tuple[str, int], Row] = {}
    for runs in sizes:
        # Set-up, not measured: this size's databases (and dry-run SQL) are built at once,
        # one thread per dialect (their processes and database servers overlap); then each
        # is measured alone.
        with ThreadPoolExecutor(len(dialects)) as pool:
            futures = [pool.submit(_prepare, scratch, dialect, runs) for dialect in dialects]
            prepared = [future.result() for future in futures]
        for dialect, (template, script) in zip(dialects, prepared, strict=True):
            flowdb, floor = Timing(), Timing()
            flowdb_rss, floor_rss = [], []
            for _ in range(repeat):
                copy = scratch.copy(template)
                seconds, rss = run_measuring_memory(
                    ["flowdb", "database", "upgrade", "-y", "-r", AFTER],
                    env=flowdb_env(copy),
                )
                flowdb.samples.append(seconds)
                flowdb_rss.append(rss)
                scratch.drop(copy)
                copy = scratch.copy(template)
                seconds, rss = run_measuring_memory(
                    ["bench.floor", copy, str(script)], env=flowdb_env(copy)
                )
                floor.samples.append(seconds)
                floor_rss.append(rss)
                scratch.drop(copy)
            scratch.drop(template)
            rows[(dialect, runs)] = Row(
                f"{dialect}: {runs:,} flow runs, {runs // 5:,} task runs, {2 * runs:,} logs",
                flowdb,
                "same statements by hand",
                floor,
                target=1.5,
                note=f"max RSS flowdb {max(flowdb_rss) / 1024:.0f} MiB, "
                f"floor {max(floor_rss) / 1024:.0f} MiB",
            )
    return [rows[(dialect, runs)] for dialect in dialects for runs in sizes]

"""Case 14: SQLite writes while this release's expand revisions run, and the contract's rebuild.

One SQLite file at the previous release's head (9e3f5a7b2d46) holds ``runs`` flow runs,
runs/5 task runs, two log lines per run and one line per task run stored, as the
previous release stores them, with the task run only (the NOT NULL pair's backfill has
work to do). Four connections set up like the server's (WAL, 30 s busy timeout) play the
API (bench.online's load: reads of a run and its logs, renames, log inserts) while
``flowdb database upgrade -y -r <last expand>`` runs; every write's wait is recorded.
Then, on the same file and under the same load, the contract (``--contract-now`` to
head), whose SQLite table rebuild of ``log`` holds the write lock for its whole copy.

The target: no write waits over 1 s during the expand. The contract is the baseline: it
shows what a rebuild costs at this size, the reason rebuilds are contract-only.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from bench.common import PYTHON, Row, Timing, run
from bench.databases import Scratch, flowdb_env
from bench.online import Load, LoadReport, _sample_run_ids

PREVIOUS_HEAD = "9e3f5a7b2d46"  # the previous release's head
LAST_EXPAND = "a1f5c7e9b3d2"  # this release's last expand revision

_FILL = [
    "INSERT INTO flow (id, name) WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 "
    "FROM k WHERE i < 9) SELECT printf('%032x', i), 'flow-' || i FROM k",
    "INSERT INTO flow_run (id, flow_id, name, expected_start_time, state_type, state_name, "
    "ended_at) WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < :runs) "
    "SELECT lower(hex(randomblob(16))), printf('%032x', i % 10), 'run-' || i, "
    "datetime('now', '-' || i || ' seconds'), 'COMPLETED', 'Completed', "
    "datetime('now', '-' || i || ' seconds') FROM k",
    "INSERT INTO task_run (id, flow_run_id, task_key, dynamic_key, name) "
    "SELECT lower(hex(randomblob(16))), id, 'task-' || rowid, '0', 'task' "
    "FROM flow_run WHERE rowid <= :tasks",
    "INSERT INTO log (id, name, level, flow_run_id, message, timestamp) "
    "SELECT lower(hex(randomblob(16))), 'flowdb.run', 20, id, 'line ' || n.n, CURRENT_TIMESTAMP "
    "FROM flow_run, (SELECT 1 AS n UNION ALL SELECT 2) AS n",
    "INSERT INTO log (id, name, level, task_run_id, message, timestamp) "
    "SELECT lower(hex(randomblob(16))), 'flowdb.task', 20, id, 'task line', CURRENT_TIMESTAMP "
    "FROM task_run",
]


def _build(scratch: Scratch, runs: int) -> str:
    """A SQLite file at the previous head, filled in bulk."""
    url = scratch.sqlite_url()
    run(
        [PYTHON, "-m", "flowdb", "database", "upgrade", "-y", "-r", PREVIOUS_HEAD],
        env=flowdb_env(url),
    )
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in _FILL:
                connection.execute(sa.text(statement), {"runs": runs, "tasks": runs // 5})
    finally:
        engine.dispose()
    return url


def _upgrade_under_load(
    url: str, load: Load, args: list[str], tail: float
) -> tuple[float, LoadReport]:
    """Run one upgrade while ``load`` runs; the waits recorded during it (and ``tail`` s
    after)."""
    load.report = LoadReport()
    started = time.perf_counter()
    run([PYTHON, "-m", "flowdb", "database", "upgrade", "-y", *args], env=flowdb_env(url))
    elapsed = time.perf_counter() - started
    time.sleep(tail)
    return elapsed, load.report


def _worst(report: LoadReport) -> float:
    return max(report.write_waits, default=0.0)


def _p99(waits: list[float]) -> float:
    ordered = sorted(waits)
    return ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0


def bench_expand_writes(
    scratch: Scratch, runs: int, lead: float = 1.0, tail: float = 0.5
) -> list[Row]:
    """The writes' worst wait during the expand, against the contract's rebuild.

    ``lead``/``tail``: seconds of load before the first upgrade (the clients at their
    steady rate) and after each (shorter when tiny).
    """
    url = _build(scratch, runs)
    run_ids = _sample_run_ids(url)
    with Load(url, run_ids) as load:
        time.sleep(lead)
        expand_time, expand = _upgrade_under_load(url, load, ["-r", LAST_EXPAND], tail)
        contract_time, contract = _upgrade_under_load(
            url, load, ["--contract-now", "-r", "head"], tail
        )
    scratch.drop(url)
    size = f"{runs:,} flow runs, {runs // 5:,} task runs, {2 * runs + runs // 5:,} logs"
    return [
        Row(
            f"sqlite: worst write wait during the expand ({size})",
            Timing([_worst(expand)]),
            "during the contract (rebuild of log)",
            Timing([_worst(contract)]),
            limit=1.0,
            note=f"{len(expand.write_waits):,} writes, p99 {_p99(expand.write_waits) * 1000:.0f} "
            f"ms, {len(expand.failures)} failed (contract: {len(contract.write_waits):,} writes, "
            f"p99 {_p99(contract.write_waits) * 1000:.0f} ms, {len(contract.failures)} failed)",
        ),
        Row(
            "sqlite: expand upgrade time under load",
            Timing([expand_time]),
            "the contract's (its log rebuild)",
            Timing([contract_time]),
            note=f"previous head {PREVIOUS_HEAD} -> {LAST_EXPAND}, then --contract-now to head",
        ),
    ]

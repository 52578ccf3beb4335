"""Case 8: concurrent ``set_state`` calls on the same runs, and the invariants they must keep.

Each flow run starts SCHEDULED and receives two rounds of ``CALLS`` concurrent calls
from real HTTP clients: first RUNNING (with ``force``, so every call is a state entry
the counters must see), then a mix of terminal and other states (by the rules, so some
are refused with 409). Afterwards every run is read back with its history and checked:

* its current state is the last state of its history;
* the history's timestamps increase strictly;
* ``run_count`` equals the number of entries into RUNNING;
* ``start_time`` is the first RUNNING's timestamp, ``end_time`` the last terminal one's.

The in-suite test (``tests/server/test_state_races.py``) runs a few runs; the bench
case 200 runs on each dialect with 1 and 4 workers (10 runs, 1 and 2 workers, tiny).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

CALLS = 6
SECOND_ROUND = ["COMPLETED", "FAILED", "CANCELLED", "CRASHED", "RUNNING", "PAUSED"]
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
RUNS_AT_ONCE = 8


@dataclass
class RaceReport:
    """What a race did: answers by status code, and runs that broke each invariant."""

    runs: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def broken_runs(self) -> int:
        """How many invariant violations were found, over all runs and invariants."""
        return sum(self.violations.values())


def race_states(base_url: str, runs: int, *, force: bool = True) -> RaceReport:
    """Run the two rounds on ``runs`` new flow runs of the server at ``base_url``; check them.

    ``force=False`` sends the first round without the flag (for servers without it).
    """
    return asyncio.run(_race(base_url, runs, force))


async def _race(base_url: str, runs: int, force: bool) -> RaceReport:
    import httpx

    report = RaceReport(runs=runs)
    limits = httpx.Limits(max_connections=RUNS_AT_ONCE * CALLS)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120) as client:
        flow = await client.post("/api/flows", json={"name": f"race-{time.time_ns()}"})
        flow.raise_for_status()
        ids = []
        for _ in range(runs):
            body = {"flow_id": flow.json()["id"], "state": {"type": "SCHEDULED"}}
            created = await client.post("/api/flow_runs", json=body)
            created.raise_for_status()
            ids.append(created.json()["id"])
        started = time.perf_counter()
        gate = asyncio.Semaphore(RUNS_AT_ONCE)

        async def one_run(run_id: str) -> None:
            async with gate:
                first = {"type": "RUNNING", **({"force": True} if force else {})}
                for bodies in ([first] * CALLS, [{"type": kind} for kind in SECOND_ROUND]):
                    answers = await asyncio.gather(
                        *(
                            client.post(f"/api/flow_runs/{run_id}/set_state", json=body)
                            for body in bodies
                        )
                    )
                    report.statuses.update(answer.status_code for answer in answers)

        await asyncio.gather(*(one_run(run_id) for run_id in ids))
        report.seconds = time.perf_counter() - started
        for run_id in ids:
            run = (await client.get(f"/api/flow_runs/{run_id}")).json()
            history = (await client.get(f"/api/flow_runs/{run_id}/states?limit=200")).json()
            for broken in check_run(run, history):
                report.violations[broken] += 1
                if len(report.examples) < 5:
                    report.examples.append(f"run {run_id}: {broken}")
    return report


def check_run(run: dict[str, Any], history: list[dict[str, Any]]) -> list[str]:
    """The invariants ``run`` (an API flow run) breaks against its state ``history``."""
    broken = []
    if not history or run["state_id"] != history[-1]["id"]:
        broken.append("current state is not the last of the history")
    stamps = [state["timestamp"] for state in history]
    if any(later <= earlier for earlier, later in itertools.pairwise(stamps)):
        broken.append("history timestamps do not increase")
    running = [state["timestamp"] for state in history if state["type"] == "RUNNING"]
    if run["run_count"] != len(running):
        broken.append("run_count differs from the entries into RUNNING")
    if run["start_time"] != (running[0] if running else None):
        broken.append("start_time is not the first RUNNING")
    ends = [state["timestamp"] for state in history if state["type"] in TERMINAL]
    if run["end_time"] != (ends[-1] if ends else None):
        broken.append("end_time is not the last terminal state")
    return broken


def bench_state_races(scratch: Any, runs: int, many: int = 4) -> list[Any]:
    """Case 8's rows: one race per dialect and worker count (1 and ``many``), with its
    violations."""
    from bench.common import Row, Timing
    from bench.server import running_servers

    rows = []
    shapes = [(dialect, workers) for dialect in ("sqlite", "postgresql") for workers in (1, many)]
    # The four servers start (and stop) together; each race runs alone, the others idle.
    with running_servers(scratch, shapes) as bases:
        reports = {shape: race_states(bases[shape], runs) for shape in shapes}
    for dialect, workers in shapes:
        report = reports[(dialect, workers)]
        answers = ", ".join(f"{code}: {n}" for code, n in sorted(report.statuses.items()))
        rows.append(
            Row(
                f"{dialect}, {workers} worker(s): {runs} runs × 2 rounds × {CALLS} calls",
                Timing([report.seconds]),
                "-",
                None,
                note=f"{report.broken_runs} invariant violations; answers {answers}",
            )
        )

    return rows

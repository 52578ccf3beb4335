"""Concurrent ``set_state`` calls from real HTTP clients on a real server, 1 and 4 workers.

The scenario and its invariants are bench case 8's (``bench/state_races.py``), at a
size the suite can afford; the bench runs 200 runs per configuration.
"""

from __future__ import annotations

import signal

import pytest
from bench.state_races import CALLS, RUNS_AT_ONCE, check_run, race_states

from tests.server.test_start import free_port, start_server, wait_until_ready

#: One wave: every run raced at once (the bench's concurrency, ``RUNS_AT_ONCE`` runs of
#: ``CALLS`` calls each); a second, smaller wave added time, not another kind of race.
RUNS = RUNS_AT_ONCE


@pytest.mark.parametrize("workers", [1, 4])
def test_concurrent_state_changes_keep_every_run_consistent(configured: str, workers: int) -> None:
    port = free_port()
    process = start_server(configured, port, "--workers", str(workers), "--log-level", "warning")
    try:
        wait_until_ready(port, process)
        report = race_states(f"http://127.0.0.1:{port}", RUNS)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert "Traceback" not in stderr
    assert report.violations == {}, report.examples
    # the forced first round is all 201s; the second admits one terminal state per run
    assert set(report.statuses) <= {201, 409}, report.statuses
    assert report.statuses[201] >= RUNS * (CALLS + 1)
    assert report.statuses[409] >= RUNS * 3


def test_the_invariant_check_finds_each_kind_of_damage() -> None:
    history = [
        {"id": "a", "type": "SCHEDULED", "timestamp": "2026-01-01T00:00:01Z"},
        {"id": "b", "type": "RUNNING", "timestamp": "2026-01-01T00:00:02Z"},
        {"id": "c", "type": "COMPLETED", "timestamp": "2026-01-01T00:00:02Z"},
    ]
    run = {
        "state_id": "b",
        "run_count": 2,
        "start_time": None,
        "end_time": "2026-01-01T00:00:01Z",
    }
    assert check_run(run, history) == [
        "current state is not the last of the history",
        "history timestamps do not increase",
        "run_count differs from the entries into RUNNING",
        "start_time is not the first RUNNING",
        "end_time is not the last terminal state",
    ]
    history[2]["timestamp"] = "2026-01-01T00:00:03Z"
    good = {
        "state_id": "c",
        "run_count": 1,
        "start_time": "2026-01-01T00:00:02Z",
        "end_time": "2026-01-01T00:00:03Z",
    }
    assert check_run(good, history) == []

"""The rolling upgrade of README "Rolling upgrades", for real, under load, on PostgreSQL.

The previous release (``bench.rolling.PREVIOUS``, d43db95, installed from git history)
makes the database with a few thousand flow runs and serves it with two replicas under
a mixed load of reads, creates and state changes; this release's ``upgrade -y``
applies the expands and stops before the contract; two replicas of this release join
the rotation, the old ones leave it and stop one at a time; the contract runs; the
load goes on at head. ``bench.rolling`` runs the procedure and records every request.

Asserted: no failed request (5xx, connection error, or nowhere to send it) from the
first request to the last; at every poll a replica in rotation whose latest readiness
probe answered 200; both releases served during the upgrade; every acknowledged
write stored; ``check`` clean at head. Reported, not asserted: the p99 latency ratio
during/before and the polls at which no replica had answered ready within 200 ms.
Both depend on the machine's load (the suite runs beside other work on two cores; the
previous release's readiness inspects the whole schema per call, 0.5-1.6 s under a
load average of 15-20), not on flowdb; the bench case 13 reports them at 1,000,000 runs.

This is also the suite's tiny run of bench case 13 (``rolling``): the upgrade runs at the
case's tiny size (``bench.rolling.TINY``, ``TINY_RUNS`` flow runs), and the case's table
and results file are made from this same record and checked as tests/bench/test_bench.py
checks every other case's (``check_tiny_run``), so the suite upgrades once, not twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.__main__ import results_document
from bench.common import render_table
from bench.rolling import (
    FRESH,
    TINY,
    TINY_RUNS,
    describe,
    percentile,
    report_rolling,
    rolling_upgrade,
)

from flowdb.database.history import load_history
from tests.bench.tiny import CASES, check_tiny_run
from tests.dbtools import revision_of


@pytest.mark.slow
@pytest.mark.releases
def test_a_rolling_upgrade_under_load_fails_no_request_and_loses_no_write(
    postgres_url: str, tmp_path: Path
) -> None:
    outcome = rolling_upgrade(postgres_url, TINY_RUNS, **TINY)
    print(describe(outcome))
    # The upgrade applied the expands and stopped before the contract: old replicas served.
    first = outcome.upgrade_output.split("--- second upgrade -y ---")[0]
    assert "Stopped before contract" in first, outcome.upgrade_output
    assert "a release without heartbeat at 127.0.0.1" in first, outcome.upgrade_output
    assert outcome.at_head and revision_of(postgres_url) == load_history().head
    assert outcome.contract_by, outcome.upgrade_output

    assert outcome.requests, "the load sent nothing"
    assert outcome.failures == [], outcome.failures[:20]
    assert outcome.fewest_ready >= 1, describe(outcome)

    # Both releases served, each through part of the upgrade; every route was exercised.
    start, head = outcome.phase_at("upgrade -y"), outcome.phase_at("at head")
    during = {r.replica for r in outcome.requests if start <= r.at <= head}
    assert {"old-1", "old-2", "new-1", "new-2"} <= during, during
    expanded = outcome.phase_at("expand done")
    assert any(
        r.replica.startswith("old") and r.at > expanded and r.status == 201
        for r in outcome.requests
    ), "no write acknowledged by the previous release after the expand"
    for route in ("read", "create", "set_state"):
        assert any(r.route == route and r.status in (200, 201) for r in outcome.requests), route

    assert outcome.missing_writes == [], outcome.missing_writes[:20]
    assert outcome.check_code == 0, outcome.check_output
    assert outcome.old_exit_codes == [130, 130]  # SIGINT: each old replica stopped cleanly

    before = [r.latency for r in outcome.window("before")]
    upgrading = [r.latency for r in outcome.window("during")]
    print(
        f"p99 before {percentile(before, 0.99) * 1000:.0f} ms, during "
        f"{percentile(upgrading, 0.99) * 1000:.0f} ms; polls without a replica ready within "
        f"{FRESH * 1000:.0f} ms: {outcome.polls_without_fresh} of {len(outcome.sizes)}"
    )

    # Bench case 13 at the tiny size: its table, printed and written, from this record.
    output = tmp_path / "results.md"
    table = render_table(CASES["rolling"][0], report_rolling(outcome, output, tiny=True))
    print(table)
    output.write_text(results_document("tiny", 1, [table]), encoding="utf-8")
    check_tiny_run("rolling", table, output.read_text(encoding="utf-8"))

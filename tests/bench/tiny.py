"""What the suite checks of each benchmark case's tiny run: its table, printed and written.

Shared by tests/bench/test_bench.py (a subprocess ``python -m bench --tiny`` per case) and
tests/server/test_rolling_upgrade.py, which runs case 13 (``rolling``) at the tiny size
in its own process and checks its table the same way (one rolling upgrade for both).
"""

from __future__ import annotations

import re

RATIO = re.compile(r"\| (?P<ratio>\d+\.\d\d)× \|")

#: Each case's title and the fewest ratios its table prints at the tiny size (the rows
#: with a baseline); together at least the 23 the whole run was held to.
CASES = {
    "startup": ("1. CLI start-up", 4),
    "upgrade": ("2. Empty database to head", 6),
    "data": ("3. Data migrations at scale", 3),
    "concurrency": ("4. Concurrent upgrades", 9),
    "dryrun": ("5. Dry-run SQL for the whole history", 4),
    "server": ("6. REST API throughput", 8),
    "online": ("7. Upgrading a busy database", 4),
    "states": ("8. Concurrent state changes", 0),
    "fresh": ("9. Fresh installs from the snapshot", 12),
    "backup": ("10. SQLite backup before a change", 2),
    "ready": ("11. Readiness probes", 4),
    "writes": ("12. SQLite write tails", 10),
    "rolling": ("13. A rolling upgrade under load", 3),
    "expand": ("14. SQLite writes during the expand", 2),
}

#: Cases whose tiny run is a test elsewhere, which checks the table with ``check_tiny_run``.
RUN_ELSEWHERE = {"rolling": "tests/server/test_rolling_upgrade.py"}


def check_tiny_run(case: str, printed: str, written: str) -> None:
    """Assert that ``case`` printed its table (``printed``) with at least its ratios, all
    positive, and wrote it with the PostgreSQL server's version (``written``)."""
    title, least = CASES[case]
    assert f"### {title}" in printed
    ratios = [float(m["ratio"]) for m in RATIO.finditer(printed)]
    assert len(ratios) >= least, printed
    assert all(ratio > 0 for ratio in ratios)
    assert "PostgreSQL 1" in written  # the server version was measured, not "not measured"
    assert f"### {title}" in written
    if case == "server":
        assert re.search(r"\| [\d,]+ req/s \|", written)
    if case == "states":
        violations = re.findall(r"\| (\d+) invariant violations;", written)
        assert violations == ["0"] * 4, violations

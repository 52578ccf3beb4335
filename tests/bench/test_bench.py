"""The benchmark suite runs end to end at its tiny size, so it cannot rot.

Nothing here asserts a timing: the machine is shared. It asserts that every case ran,
measured something and compared it with its baseline. Each case is an item of its own
(``python -m bench --tiny --cases <case>``), so xdist spreads them over the workers;
together they are the whole ``--tiny`` run, and a test checks that none is left out.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from bench.__main__ import ALL_CASES

REPO = Path(__file__).resolve().parents[2]
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


def test_every_case_of_the_benchmark_is_run_by_the_suite() -> None:
    assert tuple(CASES) == ALL_CASES
    assert sum(least for _, least in CASES.values()) >= 23


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_tiny_benchmark_case_runs_and_prints_its_table(case: str, tmp_path: Path) -> None:
    title, least = CASES[case]
    output = tmp_path / "results.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--cases", case, "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"### {title}" in result.stdout
    ratios = [float(m["ratio"]) for m in RATIO.finditer(result.stdout)]
    assert len(ratios) >= least, result.stdout
    assert all(ratio > 0 for ratio in ratios)
    written = output.read_text(encoding="utf-8")
    assert "PostgreSQL 1" in written  # the server version was measured, not "not measured"
    assert f"### {title}" in written
    if case == "server":
        assert re.search(r"\| [\d,]+ req/s \|", written)
    if case == "states":
        violations = re.findall(r"\| (\d+) invariant violations;", written)
        assert violations == ["0"] * 4, violations


def test_unknown_case_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--cases", "nope", "--no-write"],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown case(s) nope" in result.stderr

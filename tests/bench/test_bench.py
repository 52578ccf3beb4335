"""The benchmark suite runs end to end at its tiny size, so it cannot rot.

Nothing here asserts a timing: the machine is shared. It asserts that every case ran,
measured something and compared it with its baseline.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RATIO = re.compile(r"\| (?P<ratio>\d+\.\d\d)× \|")


@pytest.mark.slow
def test_tiny_benchmark_run_prints_every_case(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for title in (
        "1. CLI start-up",
        "2. Empty database to head",
        "3. Data migrations at scale",
        "4. Concurrent upgrades",
        "5. Dry-run SQL for the whole history",
        "6. REST API throughput",
        "8. Concurrent state changes",
        "9. Fresh installs from the snapshot",
    ):
        assert f"### {title}" in result.stdout
    ratios = [float(m["ratio"]) for m in RATIO.finditer(result.stdout)]
    assert len(ratios) >= 23
    assert all(ratio > 0 for ratio in ratios)
    written = output.read_text(encoding="utf-8")
    assert "PostgreSQL 1" in written  # the server version was measured, not "not measured"
    assert "### 6. REST API throughput" in written
    assert re.search(r"\| [\d,]+ req/s \|", written)
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

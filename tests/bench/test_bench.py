"""The benchmark suite runs end to end at its tiny size, so it cannot rot.

Nothing here asserts a timing: the machine is shared. It asserts that every case ran,
measured something and compared it with its baseline. Each case is an item of its own
(``python -m bench --tiny --cases <case>``), so xdist spreads them over the workers;
together they are the whole ``--tiny`` run, and a test checks that none is left out.
Case 13 (``rolling``) is the exception: tests/server/test_rolling_upgrade.py runs it at
the tiny size and checks its table the same way (``tests.bench.tiny.check_tiny_run``),
so the suite makes one rolling upgrade, not two.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bench.__main__ import ALL_CASES

from tests.bench.tiny import CASES, RUN_ELSEWHERE, check_tiny_run

REPO = Path(__file__).resolve().parents[2]


def test_every_case_of_the_benchmark_is_run_by_the_suite() -> None:
    assert tuple(CASES) == ALL_CASES
    assert sum(least for _, least in CASES.values()) >= 23
    # A case run elsewhere is run there, at the tiny size, with its table checked.
    for case, path in RUN_ELSEWHERE.items():
        source = (REPO / path).read_text(encoding="utf-8")
        assert f'check_tiny_run("{case}"' in source, path


@pytest.mark.slow
@pytest.mark.parametrize("case", [case for case in CASES if case not in RUN_ELSEWHERE])
def test_tiny_benchmark_case_runs_and_prints_its_table(case: str, tmp_path: Path) -> None:
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
    check_tiny_run(case, result.stdout, output.read_text(encoding="utf-8"))


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

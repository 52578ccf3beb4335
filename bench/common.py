"""Timing, tables and the environment report shared by every benchmark case.

Benchmarks measure ratios within one run: this machine is shared and noisy, so a
case always times its baseline next to itself, interleaved, and reports medians.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PYTHON = sys.executable


@dataclass
class Timing:
    """Repeated measurements of one thing, in seconds."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Half the distance between the fastest and slowest run, in seconds."""
        return (max(self.samples) - min(self.samples)) / 2


@dataclass
class Row:
    """One line of a result table: a case, its baseline and their ratio against a target."""

    case: str
    measured: Timing
    baseline_name: str
    baseline: Timing | None
    target: float | None = None
    note: str = ""
    limit: float | None = None  # an absolute target in seconds, for cases without a ratio

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline.median == 0:
            return None
        return self.measured.median / self.baseline.median

    @property
    def verdict(self) -> str:
        checks = []
        if self.limit is not None:
            checks.append(self.measured.median <= self.limit)
        if self.target is not None and self.ratio is not None:
            checks.append(self.ratio <= self.target)
        if not checks:
            return ""
        return "met" if all(checks) else "MISSED"


def time_call(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def interleaved(
    cases: dict[str, Callable[[], object]], repeat: int, setup: Callable[[], object] | None = None
) -> dict[str, Timing]:
    """Time each case ``repeat`` times, alternating cases so drift hits all of them alike."""
    timings = {name: Timing() for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            if setup is not None:
                setup()
            timings[name].samples.append(time_call(fn))
    return timings


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, failing loudly if it fails (a benchmark of a failure measures nothing)."""
    result = subprocess.run(
        args, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def run_measuring_memory(module_args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run ``python -m <module_args>``; return its wall time and its peak memory in KiB.

    The peak is the child's own (see ``bench.peak_memory``), not inherited from us.
    """
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".peak") as peak_file:
        args = [PYTHON, "-m", "bench.peak_memory", peak_file.name, *module_args]
        started = time.perf_counter()
        result = subprocess.run(
            args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return elapsed, int(Path(peak_file.name).read_text())


def format_seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def render_table(title: str, rows: list[Row]) -> str:
    """A Markdown table of ``rows`` (readable on a terminal too)."""
    lines = [
        f"### {title}",
        "",
        "| case | median | ± | baseline | baseline median | ratio | target | verdict | note |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        base = format_seconds(row.baseline.median) if row.baseline else "-"
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "-"
        targets = [f"≤ {row.target:g}×"] if row.target is not None else []
        targets += [f"≤ {format_seconds(row.limit)}"] if row.limit is not None else []
        target = ", ".join(targets) or "-"
        lines.append(
            f"| {row.case} | {format_seconds(row.measured.median)} | "
            f"{format_seconds(row.measured.spread)} | {row.baseline_name} | {base} | {ratio} | "
            f"{target} | {row.verdict} | {row.note} |"
        )
    return "\n".join(lines) + "\n"


def environment_report(postgres_version: str | None) -> str:
    """The facts a reader needs to compare results across machines."""
    return (
        f"- machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()}\n"
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"PostgreSQL {postgres_version or 'not measured'}\n"
    )

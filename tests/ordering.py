"""Run the longest items first, from the durations a previous run measured.

With two workers the suite ends when its last item does: an item of a minute that
starts last keeps one core busy alone while the other waits. Sorted longest first and
handed out a couple at a time (``--dist load --maxschedchunk 2``), the long items
overlap each other early and the many short ones fill the gaps at the end
(longest-processing-time-first scheduling).

The durations live in ``tests/durations.json`` (node id -> seconds, setup and
teardown included), written by a run of the whole suite with ``--store-durations``.
An item the file does not know gets ``UNKNOWN_SECONDS``; a stale file only makes the
order less good, never a test wrong. Items keep their collection order among equals,
so a module's items stay together where their durations tie.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
#: What an item the file does not know is taken to cost: about a short item's median.
UNKNOWN_SECONDS = 0.3


def add_option(parser: pytest.Parser) -> None:
    """``--store-durations``: write this run's per-item durations to ``DURATIONS``."""
    parser.addoption(
        "--store-durations",
        action="store_true",
        help=f"write each item's duration (setup+call+teardown) to {DURATIONS.name}",
    )


def known_durations(path: Path = DURATIONS) -> dict[str, float]:
    """The stored durations, or none when the file is missing or unreadable."""
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def longest_first(items: list[pytest.Item], durations: dict[str, float]) -> None:
    """Sort ``items`` in place by their known duration, longest first (stable)."""
    items.sort(key=lambda item: -durations.get(item.nodeid, UNKNOWN_SECONDS))


class DurationRecorder:
    """Sums each item's phases as their reports arrive and writes them at the end.

    Under xdist the reports reach the controlling process, which writes the file once;
    a worker has nothing to write.
    """

    def __init__(self, path: Path = DURATIONS) -> None:
        self.path = path
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Add one phase's duration to its item's sum."""
        self.seconds[report.nodeid] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write the sums, sorted by node id: the file is this run's, so store from a
        run of the whole suite (items a run left out would lose their entries)."""
        if hasattr(session.config, "workerinput") or not self.seconds:
            return
        rounded = {node: round(s, 2) for node, s in sorted(self.seconds.items())}
        self.path.write_text(json.dumps(rounded, indent=0) + "\n")

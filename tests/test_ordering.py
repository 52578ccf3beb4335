"""The suite's order: longest items first, from durations a previous run stored."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.ordering import UNKNOWN_SECONDS, DurationRecorder, known_durations, longest_first


def _item(nodeid: str) -> Any:
    return SimpleNamespace(nodeid=nodeid)


def test_items_run_longest_first_and_unknown_ones_as_a_short_item() -> None:
    items = [_item(n) for n in ("a", "b", "c", "d", "e")]
    longest_first(items, {"b": 30.0, "c": 2.0, "e": UNKNOWN_SECONDS / 2})
    # "a" and "d" are unknown: taken as UNKNOWN_SECONDS, between "c" and "e", in their order.
    assert [item.nodeid for item in items] == ["b", "c", "a", "d", "e"]


def test_a_missing_or_corrupt_file_means_no_known_durations(tmp_path: Path) -> None:
    assert known_durations(tmp_path / "missing.json") == {}
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    assert known_durations(corrupt) == {}
    corrupt.write_text("[1, 2]")
    assert known_durations(corrupt) == {}


def test_stored_durations_sum_the_phases_and_replace_the_file(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    path.write_text(json.dumps({"old::gone": 4.0, "t::x": 99.0}))
    recorder = DurationRecorder(path)
    for phase, seconds in (("setup", 0.5), ("call", 2.0), ("teardown", 0.25)):
        recorder.pytest_runtest_logreport(
            SimpleNamespace(nodeid="t::x", when=phase, duration=seconds)
        )
    recorder.pytest_sessionfinish(SimpleNamespace(config=SimpleNamespace()))
    assert known_durations(path) == {"t::x": 2.75}


def test_a_worker_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    recorder = DurationRecorder(path)
    recorder.pytest_runtest_logreport(SimpleNamespace(nodeid="t::x", duration=1.0))
    worker = SimpleNamespace(config=SimpleNamespace(workerinput={}))
    recorder.pytest_sessionfinish(worker)
    assert not path.exists()

"""The retention simulation, small: 12 days, a 3-day retention, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from bench.retention import PLATEAU_FACTOR, plateau_day, plateau_ratio, simulate


@pytest.mark.parametrize("fixture", ["sqlite_url", "postgres_url"])
def test_a_daily_clean_keeps_the_database_on_a_plateau(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    days = simulate(
        str(request.getfixturevalue(fixture)), days=12, keep=3, runs_per_day=40, logs=10
    )
    assert [day.runs_kept for day in days[:3]] == [40, 80, 120]  # nothing old enough yet
    assert all(day.runs_kept == 120 and day.runs_deleted == 40 for day in days[3:])
    assert days[-1].size_bytes > days[0].size_bytes  # the measure sees the data
    ratio = plateau_ratio(days, keep=3)
    assert ratio <= PLATEAU_FACTOR, (
        f"size grew {ratio:.2f}x from day {plateau_day(3)} to day 12: "
        f"{[day.size_bytes for day in days]}"
    )

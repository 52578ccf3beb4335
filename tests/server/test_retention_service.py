"""The server's retention service: off by default, deletes on its own, one cleaner at a time."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from flowdb.server.app import create_app
from tests.cli.helpers import flowdb, ok
from tests.database.retention_data import remaining, seed


def _wait_for(condition: object, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def _at_head_and_seeded(
    url: str, monkeypatch: pytest.MonkeyPatch, expired: int, **settings: str
) -> dict[str, list[str]]:
    """``url`` upgraded and seeded with ``expired`` runs past a 7-day retention (and runs
    it keeps); the service turned on with ``settings`` (environment variables)."""
    ok(flowdb(url, "database", "upgrade", "-y"))
    for name, value in {"FLOWDB_RETENTION_DAYS": "7", **settings}.items():
        monkeypatch.setenv(name, value)
    return seed(url, expired=expired)


def test_the_service_is_off_by_default(configured: str) -> None:
    ok(flowdb(configured, "database", "upgrade", "-y"))
    ids = seed(configured, expired=3)
    with TestClient(create_app()) as client:
        assert client.app.state.retention is None  # type: ignore[attr-defined]
        assert client.get("/api/health").status_code == 200
    assert remaining(configured, ids["expired"]) == 3


def test_the_service_deletes_expired_runs_and_skips_a_round_while_another_cleans(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowdb.database.target import Database

    ids = _at_head_and_seeded(
        configured,
        monkeypatch,
        12,
        FLOWDB_RETENTION_INTERVAL="1",
        FLOWDB_RETENTION_BATCH_SIZE="5",
    )
    with Database.from_url(configured).dialect.cleaner_lock() as held:  # another replica cleans
        assert held
        with TestClient(create_app()) as client:
            service = client.app.state.retention  # type: ignore[attr-defined]
            assert service is not None
            assert _wait_for(lambda: service.rounds >= 1)
            assert service.last.startswith("skipped"), service.last
            assert remaining(configured, ids["expired"]) == 12
        assert remaining(configured, ids["expired"]) == 12
    with TestClient(create_app()) as client:
        service = client.app.state.retention  # type: ignore[attr-defined]
        assert _wait_for(lambda: remaining(configured, ids["expired"]) == 0)
        assert _wait_for(lambda: service.last.startswith("deleted"))
    for kind in ("recent", "active", "rescheduled"):
        assert remaining(configured, ids[kind]) == len(ids[kind])


def test_a_shutdown_waits_for_the_round_in_progress_to_end_after_its_batch(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stop`` returns once the round has stopped between two batches, never before."""
    import asyncio
    import threading

    from flowdb.database import retention
    from flowdb.database.target import Database
    from flowdb.server.retention import start

    ids = _at_head_and_seeded(configured, monkeypatch, 12, FLOWDB_RETENTION_BATCH_SIZE="1")
    first_batch = threading.Event()
    real_clean = retention.clean

    def slow_clean(database: Database, cutoff: object, **options: object) -> object:
        on_batch = options.pop("on_batch")

        def slowly(progress: object) -> None:
            first_batch.set()
            time.sleep(0.2)  # the stop arrives while a batch is in flight
            on_batch(progress)  # type: ignore[operator]

        return real_clean(database, cutoff, on_batch=slowly, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(retention, "clean", slow_clean)

    async def scenario() -> str:
        service = start(Database.from_url(configured))
        assert service is not None
        await asyncio.to_thread(first_batch.wait, 30)
        await service.stop()
        return service.last  # read at once: the round must be over

    last = asyncio.run(scenario())
    assert last.startswith("stopped by the shutdown"), last
    assert 0 < remaining(configured, ids["expired"]) < 12

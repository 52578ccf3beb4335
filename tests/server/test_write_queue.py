"""The SQLite write queue (``flowdb.server.write_queue``) against a real server on a file.

Real threads send real HTTP requests to uvicorn serving the app (in this process, so
that a test can hold the queue's turn in the server's own event loop and look at how
many wait), or to a ``flowdb server start`` process. Nothing here asserts a duration:
order is read back from the database, starvation is the absence of failures.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from flowdb.server.engine import ServerDatabase
from flowdb.server.write_queue import WriteQueue
from tests import web
from tests.server.test_start import free_port, start_server, wait_until_ready

WAITERS = 12
CLIENTS = 16
CYCLES = 5


@dataclass
class Served:
    """An app served by uvicorn in a thread of this process."""

    base_url: str
    loop: asyncio.AbstractEventLoop
    database: ServerDatabase

    @property
    def queue(self) -> WriteQueue:
        assert self.database.write_queue is not None
        return self.database.write_queue

    def run(self, make: Callable[[], object]) -> Future[object]:
        """Run the coroutine ``make()`` in the server's event loop."""
        coroutine = make()
        assert asyncio.iscoroutine(coroutine)
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)


@contextmanager
def served(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """``create_app()`` on ``url`` under uvicorn in a thread; stopped after the block."""
    import uvicorn

    from flowdb.server.app import create_app

    monkeypatch.setenv("FLOWDB_DATABASE_URL", url)
    app = create_app()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="on"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),))
    thread.start()
    try:
        _wait_for(lambda: server.started or not thread.is_alive(), "the server to start")
        assert server.started
        yield Served(f"http://127.0.0.1:{port}", loop, app.state.database)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        loop.close()


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds (a safety net against hanging, not a timing check)."""
    deadline = time.monotonic() + 120
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


@contextmanager
def holding_the_turn(server: Served) -> Iterator[None]:
    """Take the write queue's turn in the server's loop for the block, as a long write would."""
    taken, release = threading.Event(), threading.Event()

    async def hold() -> None:
        async with server.queue.turn():
            taken.set()
            await asyncio.to_thread(release.wait)

    holder = server.run(hold)
    taken.wait(timeout=60)
    assert taken.is_set()
    try:
        yield
    finally:
        release.set()
        holder.result(timeout=60)


def test_writes_are_served_in_arrival_order(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with served(sqlite_url, monkeypatch) as server:
        statuses: list[int] = []

        def create(name: str) -> None:
            response = web.post(f"{server.base_url}/api/flows", json={"name": name}, timeout=60)
            statuses.append(response.status_code)

        names = [f"flow-{n:02d}" for n in range(WAITERS)]
        threads = [threading.Thread(target=create, args=(name,)) for name in names]
        with holding_the_turn(server):
            for number, thread in enumerate(threads):
                thread.start()
                # The next request is sent only once this one waits in the queue, so the
                # arrival order is the order of ``names``.
                _wait_for(lambda n=number: server.queue.queued == n + 2, f"writer {number}")
            # Reads do not queue: one is answered while every writer waits.
            assert web.get(f"{server.base_url}/api/flows", timeout=60).status_code == 200
            assert server.queue.queued == WAITERS + 1
        for thread in threads:
            thread.join(timeout=120)
        assert statuses == [201] * WAITERS

    path = sa.make_url(sqlite_url).database
    assert path is not None
    with sqlite3.connect(path) as connection:
        stored = [row[0] for row in connection.execute("SELECT name FROM flow ORDER BY rowid")]
    assert stored == names


def test_a_write_that_gets_no_turn_within_the_bound_is_a_503(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with served(sqlite_url, monkeypatch) as server:
        server.queue.timeout = 0.2
        with holding_the_turn(server):
            refused = web.post(f"{server.base_url}/api/flows", json={"name": "late"}, timeout=60)
        assert refused.status_code == 503
        assert refused.json() == {"detail": "The database stayed locked by other work; try again."}
        assert server.queue.queued == 0
        after = web.post(f"{server.base_url}/api/flows", json={"name": "late"}, timeout=60)
        assert after.status_code == 201


def test_many_threads_writing_at_once_all_get_through(sqlite_url: str, tmp_path: Path) -> None:
    """Every cycle of every thread succeeds: no 503, no ``database is locked`` in the log."""
    port = free_port()
    process = start_server(sqlite_url, port, "--workers", "1", "--log-level", "warning")
    base_url = f"http://127.0.0.1:{port}"
    done: list[int] = []
    failures: list[str] = []
    try:
        wait_until_ready(port, process)
        flow = web.post(f"{base_url}/api/flows", json={"name": "crowd"}, timeout=60)
        flow_id = flow.json()["id"]

        def client() -> None:
            cycles = 0
            # Plain HTTP: no certificates to load (16 threads loading them cost seconds).
            with httpx.Client(base_url=base_url, timeout=120, verify=False) as http:
                for _ in range(CYCLES):
                    run = http.post("/api/flow_runs", json={"flow_id": flow_id})
                    state = http.post(
                        f"/api/flow_runs/{run.json().get('id')}/set_state", json={"type": "RUNNING"}
                    )
                    read = http.get(f"/api/flow_runs/{run.json().get('id')}")
                    for response in (run, state, read):
                        if response.status_code >= 300:
                            failures.append(f"{response.status_code} {response.text}")
                    cycles += 1
            done.append(cycles)

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert failures == []
    assert done == [CYCLES] * CLIENTS
    assert "database is locked" not in stderr
    assert "Traceback" not in stderr
    with sqlite3.connect(tmp_path / "flowdb.db") as connection:
        running = connection.execute(
            "SELECT count(*) FROM flow_run WHERE state_type = 'RUNNING'"
        ).fetchone()[0]
    assert running == CLIENTS * CYCLES


def test_the_queue_is_only_for_sqlite_and_can_be_turned_off(
    sqlite_url: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowdb.database.target import Database
    from flowdb.settings import Settings

    def queue_of(url: str) -> WriteQueue | None:
        return ServerDatabase(Database.from_settings(Settings(database_url=url))).write_queue

    queue = queue_of(sqlite_url)
    assert queue is not None
    assert queue.timeout == 30
    assert queue_of(postgres_url) is None
    monkeypatch.setenv("FLOWDB_SERVER_WRITE_QUEUE", "false")
    assert queue_of(sqlite_url) is None

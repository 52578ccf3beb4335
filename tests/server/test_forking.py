"""``--workers N``: workers forked from a quiet master (``flowdb.server.forking``)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest
import uvicorn
from uvicorn import _subprocess

from flowdb.server.forking import fork_workers
from tests import web
from tests.dbtools import tcp_ports
from tests.server.test_start import (
    _cmdline,
    alive,
    free_port,
    live_workers,
    start_server,
    wait_until_ready,
)


def test_uvicorn_still_takes_its_workers_start_method_where_flowdb_sets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one attribute ``fork_workers`` replaces decides how uvicorn starts a worker;
    when uvicorn moves it, this fails (and flowdb quietly spawns again)."""
    assert isinstance(_subprocess.spawn, multiprocessing.context.BaseContext)
    monkeypatch.setattr(_subprocess, "spawn", multiprocessing.get_context("fork"))
    config = uvicorn.Config("flowdb.server.app:create_app", factory=True)
    worker = _subprocess.get_subprocess(config, lambda sockets: None, [])
    assert isinstance(worker, multiprocessing.context.ForkProcess)  # made, never started


def test_a_master_with_another_thread_or_an_unknown_uvicorn_keeps_spawning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spawn = _subprocess.spawn
    monkeypatch.setattr(_subprocess, "spawn", None)
    assert fork_workers() is False
    monkeypatch.setattr(_subprocess, "spawn", spawn)
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert fork_workers() is False
    finally:
        release.set()
        other.join()
    assert _subprocess.spawn is spawn


def test_workers_are_forked_from_a_master_without_connections_and_keep_none_of_its_handlers(
    postgres_url: str,
) -> None:
    port = free_port()
    process = start_server(postgres_url, port, "--workers", "2", "--log-level", "warning")
    try:
        wait_until_ready(port, process)
        first = live_workers(process.pid, 2)
        # A spawned worker runs "python -c 'from multiprocessing.spawn import spawn_main...'".
        assert {_cmdline(worker) for worker in first} == {_cmdline(process.pid)}
        # The schema check's connections were closed before the fork: only the listener.
        assert tcp_ports(process.pid) == {port}
        # The master queues SIGHUP for itself (a restart); a worker that kept that handler
        # would swallow it. A new interpreter's default ends the worker, and the master
        # starts (forks) another in its place.
        os.kill(first[0], signal.SIGHUP)
        deadline = time.monotonic() + 30
        while alive(first[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(first[0]), "the worker swallowed SIGHUP with the master's handler"
        replacement = live_workers(process.pid, 1, not_these=frozenset(first))
        assert _cmdline(replacement[0]) == _cmdline(process.pid)
        assert web.get(f"http://127.0.0.1:{port}/api/health").status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert "Traceback" not in stderr
    assert stderr.count("Serving ") == 1, stderr  # the master's line, not once per worker

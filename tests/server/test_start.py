"""``flowdb server start`` as real processes: replicas starting together, and refusals."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from bench.server import free_port

from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.database.history import load_history
from flowdb.errors import ExitCode
from tests import forkserver, web
from tests.dbtools import revision_of


def start_server(url: str, port: int, *extra: str, **env: str) -> subprocess.Popen[str]:
    """``python -m flowdb server start --port PORT *EXTRA`` on ``url``, its output piped.

    Forked from the fork server (``tests.forkserver``), which has imported the server
    already: a real process that serves, is signalled and exits, without the second
    of imports a fresh interpreter spends. The tests of the start itself (its imports,
    its refusals before serving) run the real command.
    """
    return forkserver.Popen(
        ["-m", "flowdb", "server", "start", "--port", str(port), *extra],
        env={**os.environ, "FLOWDB_DATABASE_URL": url, "PYTHONUNBUFFERED": "1", **env},
    )


def wait_until_ready(port: int, process: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited with {process.returncode}"
        try:
            if web.get(f"http://127.0.0.1:{port}/api/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server on port {port} not ready after {timeout} s")


@contextmanager
def servers(url: str, count: int) -> Iterator[list[tuple[int, subprocess.Popen[str]]]]:
    """``count`` server processes started together on ``url``; stopped (SIGINT) afterwards."""
    started = [(port, start_server(url, port)) for port in (free_port() for _ in range(count))]
    try:
        yield started
    finally:
        for _, process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for _, process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.slow
def test_four_replicas_on_a_fresh_database_migrate_it_once(configured: str) -> None:
    history = load_history()
    with servers(configured, 4) as replicas:
        for port, process in replicas:
            wait_until_ready(port, process)
        flow = web.post(f"http://127.0.0.1:{replicas[0][0]}/api/flows", json={"name": "etl"})
        assert flow.status_code == 201
        for port, _ in replicas:  # every replica serves the same database
            names = [f["name"] for f in web.get(f"http://127.0.0.1:{port}/api/flows").json()]
            assert names == ["etl"]
    logs = [process.communicate()[1] for _, process in replicas]
    migrators = [log for log in logs if "↑" in log]
    assert len(migrators) == 1, logs
    assert migrators[0].count("↑") == len(history.revisions)
    assert revision_of(configured) == history.head


def test_migrate_on_start_off_without_a_wait_refuses_an_old_database(configured: str) -> None:
    """``FLOWDB_SCHEMA_WAIT_TIMEOUT=0``: refused before listening (a wait that gives up later,
    after listening, is in test_waiting_replica.py)."""
    # Behind by an expand revision (a database behind by contracts only is served: fleet).
    behind = "7b5e9c2f4d3a"
    count = len(load_history().pending(behind))
    alembic_upgrade(behind)
    result = subprocess.run(
        [sys.executable, "-m", "flowdb", "server", "start", "--port", str(free_port())],
        env={
            **os.environ,
            "FLOWDB_MIGRATE_ON_START": "false",
            "FLOWDB_SCHEMA_WAIT_TIMEOUT": "0",
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == ExitCode.REFUSED
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: The database at ")
    assert f"{count} migration(s) behind" in lines[0]
    assert "flowdb database upgrade -y" in lines[0]
    assert revision_of(configured) == behind


def test_migrate_on_start_upgrades_an_old_database_then_serves_with_workers(
    configured: str,
) -> None:
    alembic_upgrade(load_history().revisions[2].id)
    port = free_port()
    process = start_server(configured, port, "--workers", "2")
    try:
        wait_until_ready(port, process)
        version = web.get(f"http://127.0.0.1:{port}/api/admin/version").json()
        assert version["schema_revision"] == load_history().head
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert stderr.count("↑") == len(load_history().revisions) - 3
    assert "Traceback" not in stderr


def test_a_worker_started_directly_refuses_in_one_line(configured: str) -> None:
    """Without the CLI's check in front (uvicorn run by hand, or a database changed
    between that check and a worker's start), the worker itself refuses cleanly."""
    # Behind by an expand revision (a database behind by contracts only is served: fleet).
    behind = "7b5e9c2f4d3a"
    count = len(load_history().pending(behind))
    alembic_upgrade(behind)
    uvicorn = [sys.executable, "-m", "uvicorn", "flowdb.server.app:create_app", "--factory"]
    result = subprocess.run(
        [*uvicorn, "--port", str(free_port())],
        env={**os.environ, "FLOWDB_MIGRATE_ON_START": "false", "FLOWDB_SCHEMA_WAIT_TIMEOUT": "1"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "Error: " in line]
    assert len(errors) == 1, result.stderr
    assert f"{count} migration(s) behind" in errors[0]
    assert "flowdb database upgrade -y" in errors[0]
    assert revision_of(configured) == behind


def worker_pids(master: int) -> list[int]:
    """The live children of process ``master`` (uvicorn's workers), from /proc."""
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] != "Z"


def live_workers(master: int, count: int, not_these: frozenset[int] = frozenset()) -> list[int]:
    """The pids of at least ``count`` live workers of ``master`` other than ``not_these``.

    Forked workers (``flowdb.server.forking``) show no name of their own: every live
    child but a resource tracker, and the children's children (the uvicorn supervisor
    may sit between the CLI and the workers).
    """
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = [w for c in worker_pids(master) for w in [c, *worker_pids(c)]]
        workers = [
            w
            for w in workers
            if alive(w) and w not in not_these and "resource_tracker" not in _cmdline(w)
        ]
        if len(workers) >= count:
            return workers
        time.sleep(0.05)
    raise AssertionError(f"{master} has no {count} new workers: {worker_pids(master)}")


def test_workers_stop_when_their_master_is_killed(configured: str) -> None:
    port = free_port()
    process = start_server(configured, port, "--workers", "2", "--log-level", "warning")
    workers: list[int] = []
    try:
        wait_until_ready(port, process)
        workers = live_workers(process.pid, 2)
        process.kill()
        process.wait()
        deadline = time.monotonic() + 30
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(w) for w in workers), "a worker outlived its master"
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        process.communicate()
    again = start_server(configured, port, "--log-level", "warning")
    try:
        wait_until_ready(port, again)  # the port is free again
    finally:
        again.send_signal(signal.SIGINT)
        again.communicate(timeout=30)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_idle_connections_outlive_the_common_client_pool_idle_time(sqlite_url: str) -> None:
    """uvicorn's own default closes idle connections after 5 s; clients keep them longer."""
    port = free_port()
    process = start_server(sqlite_url, port, "--log-level", "warning")
    try:
        wait_until_ready(port, process)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/api/health")
            assert connection.getresponse().read() == b'{"status":"ok"}'
            first_socket = connection.sock
            time.sleep(5.6)  # past uvicorn's 5 s (its timer starts before our read ends)
            # http.client does not reconnect by itself: a closed socket would raise here
            connection.request("GET", "/api/health")
            assert connection.getresponse().read() == b'{"status":"ok"}'
            assert connection.sock is first_socket
        finally:
            connection.close()
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_server_says_it_stopped(sqlite_url: str, signum: int, code: int) -> None:
    """Its last line is about the server, not what an interrupted migration leaves."""
    port = free_port()
    process = start_server(sqlite_url, port, "--log-level", "warning")
    try:
        wait_until_ready(port, process)
    finally:
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    what = "Interrupted" if signum == signal.SIGINT else "Terminated"
    assert stderr.rstrip().splitlines()[-1] == f"{what}; the API server stopped.", stderr
    assert process.returncode == code
    assert "Traceback" not in stderr


def test_the_start_names_the_database_it_serves_without_its_password(postgres_url: str) -> None:
    """Trust auth takes any password: the URL carries one, and no line shows it."""
    with_password = postgres_url.replace("://postgres@", "://postgres:s3cr3t-pw@", 1)
    assert "s3cr3t-pw" in with_password
    port = free_port()
    process = start_server(with_password, port, "--log-level", "warning")
    try:
        wait_until_ready(port, process)
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    redacted = with_password.replace("s3cr3t-pw", "***")
    serving = [line for line in stderr.splitlines() if line.startswith("Serving ")]
    assert serving == [f"Serving {redacted} at revision {load_history().head}"], stderr
    assert "s3cr3t-pw" not in stdout + stderr

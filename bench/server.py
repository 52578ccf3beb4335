"""Case 6: the REST API under load: creating flow runs and batch-inserting logs.

One server per dialect and worker count (``flowdb server start --workers N``) on a
fresh database (the four start together; each is measured while the others idle),
driven by one asyncio client with 16 requests in flight. Each row is the wall time of a
round of requests; the note turns it into requests per second.
Baselines: with 1 worker, ``GET /api/health`` rounds on the same server (the HTTP
stack without the database); with 4 workers (2 at the tiny size), the same operation
with 1 worker.
The client shares this machine's cores with the server, so absolute rates are low
bounds; the ratios are what to compare.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench.common import PYTHON, Row, Timing
from bench.databases import Scratch, flowdb_env

IN_FLIGHT = 16
LOG_BATCH = 100


def bench_server(scratch: Scratch, requests: int, repeat: int, many: int = 4) -> list[Row]:
    """Requests per second for flow runs and log batches, per dialect, 1 and ``many``
    workers."""
    rows: list[Row] = []
    shapes = [(dialect, workers) for dialect in ("sqlite", "postgresql") for workers in (1, many)]
    # The four servers start (and stop) together; each is measured alone, the rest idle.
    with running_servers(scratch, shapes) as bases:
        measured_by = {shape: _measure(bases[shape], requests, repeat) for shape in shapes}
    for dialect in ("sqlite", "postgresql"):
        single: dict[str, Timing] = {}
        for workers in (1, many):
            timings = measured_by[(dialect, workers)]
            for operation in ("create flow run", "insert 100 logs"):
                measured = timings[operation]
                if workers == 1:
                    single[operation] = measured
                    baseline_name, baseline = "GET /api/health, 1 worker", timings["health"]
                else:
                    baseline_name, baseline = f"{operation}, 1 worker", single[operation]
                rows.append(
                    Row(
                        f"{dialect}: {operation}, {workers} worker(s), {requests} requests",
                        measured,
                        baseline_name,
                        baseline,
                        note=f"{requests / measured.median:,.0f} req/s",
                    )
                )
    return rows


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(command: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    """``command`` plus a free port, started without waiting; the process and its port.

    Its stderr is kept (a pipe) for the error of a server that exits.
    """
    port = free_port()
    process = subprocess.Popen(
        [*command, str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, port


def stop_server(process: subprocess.Popen[str], timeout: float = 30) -> int | None:
    """SIGINT (a clean stop), killed after ``timeout`` seconds; its exit code, or None if killed."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


@contextmanager
def running_servers(
    scratch: Scratch, shapes: list[tuple[str, int]]
) -> Iterator[dict[tuple[str, int], str]]:
    """A server per ``(dialect, workers)`` of ``shapes``, each on a fresh database, started
    together (their start-ups overlap); their base URLs by shape. Stopped and dropped after."""
    urls = [scratch.new_url(dialect) for dialect, _ in shapes]
    command = [PYTHON, "-m", "flowdb", "server", "start", "--log-level", "warning"]
    servers = [
        ([*command, "--workers", str(workers), "--port"], flowdb_env(url))
        for url, (_, workers) in zip(urls, shapes, strict=True)
    ]
    try:
        with serving_together(servers) as bases:
            yield dict(zip(shapes, bases, strict=True))
    finally:
        for url in urls:
            scratch.drop(url)


@contextmanager
def serving(command: list[str], env: dict[str, str], probe_timeout: float = 2) -> Iterator[str]:
    """``command`` plus a free port, run until ``/api/ready`` says 200; its base URL.

    The process is stopped with SIGINT (killed after 30 s) when the block ends.
    """
    with serving_together([(command, env)], probe_timeout) as (base_url,):
        yield base_url


@contextmanager
def serving_together(
    servers: list[tuple[list[str], dict[str, str]]], probe_timeout: float = 2
) -> Iterator[list[str]]:
    """Each ``(command, env)`` of ``servers`` started at once, as ``serving`` starts one;
    their base URLs once every one says ready (their start-ups overlap)."""
    import httpx

    started: list[subprocess.Popen[str]] = []
    try:
        bases = []
        for command, env in servers:
            process, port = start_server(command, env)
            started.append(process)
            bases.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        # One client for every poll (a client per poll costs ~27 ms of CPU, mostly its SSL
        # context); keep-alive off, so that each poll still opens its own connection.
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(limits=no_reuse, timeout=probe_timeout) as client:
            for process, base_url in zip(started, bases, strict=True):
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(f"the server exited: {process.communicate()[1]}")
                    try:
                        if client.get(f"{base_url}/api/ready").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("the server was not ready within 120 s")
                    time.sleep(0.05)
        yield bases
    finally:
        for process in started:  # all asked to stop at once: their shutdowns overlap
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in started:
            stop_server(process)


def _measure(base_url: str, requests: int, repeat: int) -> dict[str, Timing]:
    """Interleaved rounds of each operation against one server."""
    return asyncio.run(_measure_async(base_url, requests, repeat))


async def _measure_async(base_url: str, requests: int, repeat: int) -> dict[str, Timing]:
    import httpx

    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        flow = await client.post("/api/flows", json={"name": "bench"})
        flow.raise_for_status()
        run = await client.post("/api/flow_runs", json={"flow_id": flow.json()["id"]})
        run.raise_for_status()
        flow_id, run_id = flow.json()["id"], run.json()["id"]
        stamp = dt.datetime.now(dt.UTC).isoformat()
        logs = [
            {"name": "bench", "level": 20, "message": f"line {n}", "timestamp": stamp}
            | {"flow_run_id": run_id}
            for n in range(LOG_BATCH)
        ]
        operations: dict[str, Callable[[], Any]] = {
            "health": lambda: client.get("/api/health"),
            "create flow run": lambda: client.post("/api/flow_runs", json={"flow_id": flow_id}),
            "insert 100 logs": lambda: client.post("/api/logs", json=logs),
        }
        timings = {name: Timing() for name in operations}
        for _ in range(repeat):
            for name, request in operations.items():
                timings[name].samples.append(await _round(request, requests))
        return timings


async def _round(request: Callable[[], Any], count: int) -> float:
    """Seconds to complete ``count`` requests with ``IN_FLIGHT`` of them open at a time."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            response = await request()
            if response.status_code >= 400:
                raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return time.perf_counter() - started

"""Case 12: SQLite write latency tails under a write-heavy mix, with and without the queue.

Three servers (``flowdb server start``) on three fresh SQLite files: 1 worker with
the write queue (``FLOWDB_SERVER_WRITE_QUEUE=true``, the default), 1 worker without
(``false``: every writer races in SQLite's busy handler, as before the queue), and 2
workers with the queue (a queue each; between them SQLite's lock decides). For 8 and
32 concurrent clients, rounds alternate between the servers. Each client
repeats a cycle of three requests on its own connection: create a flow run (write),
set it RUNNING (write), read it back (read). Write latencies of every round are
pooled for p50, p99 and max; a round's wall time gives the throughput.

Targets: with the queue, write p99 ≤ 5× write p50, no write over 1 s, and a round no
slower than without the queue (throughput not lower).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

from bench.common import PYTHON, Row, Timing, format_seconds
from bench.databases import Scratch, flowdb_env
from bench.server import serving_together

#: Requests per cycle: create a flow run, set its state, read it.
PER_CYCLE = 3
SERVER = [PYTHON, "-m", "flowdb", "server", "start", "--log-level", "warning"]
#: The servers compared: (workers, queue on).
QUEUED, RACING, TWO_WORKERS = (1, True), (1, False), (2, True)


@dataclass
class Load:
    """What one server answered across rounds: each request's seconds, each round's."""

    writes: list[float] = field(default_factory=list)
    reads: list[float] = field(default_factory=list)
    rounds: list[float] = field(default_factory=list)
    requests: int = 0

    def write_quantile(self, fraction: float) -> float:
        ordered = sorted(self.writes)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]

    @property
    def throughput(self) -> float:
        return self.requests / sum(self.rounds)


def bench_write_tails(
    scratch: Scratch, crowds: tuple[int, ...], cycles: int, repeat: int
) -> list[Row]:
    """Write p50/p99/max and throughput with the queue against without, per crowd size."""
    rows: list[Row] = []
    urls = {server: scratch.new_url("sqlite") for server in (QUEUED, RACING, TWO_WORKERS)}
    try:
        servers = [
            (
                [*SERVER, "--workers", str(workers), "--port"],
                flowdb_env(url) | {"FLOWDB_SERVER_WRITE_QUEUE": str(queued).lower()},
            )
            for (workers, queued), url in urls.items()
        ]
        with serving_together(servers) as started:  # their start-ups overlap
            bases = dict(zip(urls, started, strict=True))
            for clients in crowds:
                loads = {server: Load() for server in bases}
                for _ in range(repeat):
                    for server, base in bases.items():
                        _round(base, clients, cycles, loads[server])
                rows += _rows(clients, loads[QUEUED], loads[RACING], loads[TWO_WORKERS])
    finally:
        for url in urls.values():
            scratch.drop(url)
    return rows


def _rows(clients: int, queued: Load, racing: Load, two: Load) -> list[Row]:
    def one(value: float) -> Timing:
        return Timing([value])

    def describe(load: Load) -> str:
        return (
            f"p50 {format_seconds(load.write_quantile(0.5))}, "
            f"p99 {format_seconds(load.write_quantile(0.99))}, "
            f"max {format_seconds(max(load.writes))}, {load.throughput:,.0f} req/s, "
            f"{len(load.writes)} writes"
        )

    name = f"sqlite, {clients} clients"
    return [
        Row(
            f"{name}, queue: write p99",
            one(queued.write_quantile(0.99)),
            "write p50, queue",
            one(queued.write_quantile(0.5)),
            target=5,
            note=describe(queued),
        ),
        Row(
            f"{name}, no queue (before): write p99",
            one(racing.write_quantile(0.99)),
            "write p50, no queue",
            one(racing.write_quantile(0.5)),
            note=describe(racing),
        ),
        Row(
            f"{name}, queue: slowest write",
            one(max(queued.writes)),
            "slowest write, no queue",
            one(max(racing.writes)),
            limit=1.0,
        ),
        Row(
            f"{name}, queue: round of {PER_CYCLE} requests × cycles",
            Timing(queued.rounds),
            "the same round, no queue",
            Timing(racing.rounds),
            target=1.0,
            note=f"{queued.throughput:,.0f} req/s vs {racing.throughput:,.0f} req/s; "
            f"read p50 {format_seconds(statistics.median(queued.reads))} vs "
            f"{format_seconds(statistics.median(racing.reads))}",
        ),
        Row(
            f"{name}, queue, 2 workers: write p99",
            one(two.write_quantile(0.99)),
            "write p99, queue, 1 worker",
            one(queued.write_quantile(0.99)),
            note=describe(two) + f"; read p50 {format_seconds(statistics.median(two.reads))}",
        ),
    ]


def _round(base_url: str, clients: int, cycles: int, load: Load) -> None:
    """``cycles`` cycles shared by ``clients`` concurrent clients; adds to ``load``."""
    asyncio.run(_round_async(base_url, clients, cycles, load))


async def _round_async(base_url: str, clients: int, cycles: int, load: Load) -> None:
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120) as client:
        flow = await client.post("/api/flows", json={"name": f"bench-{time.time_ns()}"})
        flow.raise_for_status()
        flow_id = flow.json()["id"]
        remaining = cycles

        async def timed(samples: list[float], method: str, path: str, body: object) -> object:
            started = time.perf_counter()
            response = await client.request(method, path, json=body)
            samples.append(time.perf_counter() - started)
            if response.status_code >= 400:
                raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
            return response.json()

        async def cycle_client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                run = await timed(load.writes, "POST", "/api/flow_runs", {"flow_id": flow_id})
                assert isinstance(run, dict)
                path = f"/api/flow_runs/{run['id']}"
                await timed(load.writes, "POST", f"{path}/set_state", {"type": "RUNNING"})
                await timed(load.reads, "GET", path, None)

        started = time.perf_counter()
        await asyncio.gather(*(cycle_client() for _ in range(clients)))
        load.rounds.append(time.perf_counter() - started)
        load.requests += cycles * PER_CYCLE

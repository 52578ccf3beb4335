"""Case 11: what one ``/api/ready`` costs, cached (``ReadinessCache``) and as it was.

Two real server processes on one database at head: flowdb's server, and the same app
judging the schema on every probe (``bench.uncached_server``, the baseline). Rounds of
requests alternate between them, sequential and with ``IN_FLIGHT`` open at once (the
load several balancers and probes put on a replica); each row's median is the p50 of
every request's latency, its note the p95.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from bench.common import PYTHON, Row, Timing, run
from bench.databases import Scratch, flowdb_env
from bench.server import serving_together

IN_FLIGHT = 8


def bench_readiness(scratch: Scratch, requests: int, repeat: int) -> list[Row]:
    """p50 of ``/api/ready`` with the cache against the uncached route, per dialect."""
    rows: list[Row] = []
    for dialect in ("postgresql", "sqlite"):
        url = scratch.new_url(dialect)
        try:
            run([PYTHON, "-m", "flowdb", "database", "upgrade", "-y"], env=flowdb_env(url))
            cached_command = [PYTHON, "-m", "flowdb", "server", "start", "--log-level", "warning"]
            env = flowdb_env(url) | {"FLOWDB_MIGRATE_ON_START": "false"}
            with serving_together(
                [
                    ([*cached_command, "--port"], env),
                    ([PYTHON, "-m", "bench.uncached_server"], env),
                ],
                probe_timeout=5,
            ) as (cached, uncached):
                for in_flight in (1, IN_FLIGHT):
                    measured, baseline = Timing(), Timing()
                    for _ in range(repeat):
                        measured.samples += _latencies(cached, requests, in_flight)
                        baseline.samples += _latencies(uncached, requests, in_flight)
                    rows.append(
                        Row(
                            f"{dialect}: GET /api/ready at head, {in_flight} in flight",
                            measured,
                            "the same, judged on every request (before)",
                            baseline,
                            target=0.5,
                            note=f"p95 {_p95(measured) * 1000:.1f} ms vs "
                            f"{_p95(baseline) * 1000:.1f} ms",
                        )
                    )
        finally:
            scratch.drop(url)
    return rows


def _p95(timing: Timing) -> float:
    return statistics.quantiles(timing.samples, n=20)[-1]


def _latencies(base_url: str, count: int, in_flight: int) -> list[float]:
    """Each request's seconds, ``count`` requests with ``in_flight`` open at a time."""
    return asyncio.run(_latencies_async(base_url, count, in_flight))


async def _latencies_async(base_url: str, count: int, in_flight: int) -> list[float]:
    import httpx

    latencies: list[float] = []
    remaining = count
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                response = await client.get("/api/ready")
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return latencies

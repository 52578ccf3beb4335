"""``/metrics``: the server's requests, pool and migration state in Prometheus' text format.

Each app has its own registry (``prometheus_client.CollectorRegistry``), so two apps in
one process (tests) never share counters. Three kinds of metrics:

* requests, counted and timed by ``server.requests.RequestObserver`` under the route's
  template (``/api/flow_runs/{id}``, never the raw path: one series per route, not per
  id), method and status;
* the server's connection pools, read live at each scrape (``PoolCollector``);
* where the database's migrations stand (``MigrationCollector``): read in a thread by
  the same readers as ``/api/ready`` (``Database.status``, which starts a read again
  when a running migration drops a table under it, and the lock's holder, which never
  waits), at most every ``STATE_EVERY_SECONDS``; a failed read keeps the last values
  and sets ``flowdb_migration_state_up`` to 0 instead of failing the scrape.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from flowdb.errors import FlowdbError

if TYPE_CHECKING:
    from flowdb.database.target import Database
    from flowdb.server.engine import ServerDatabase

#: How often the migration state is read at most; scrapes in between reuse the last read.
STATE_EVERY_SECONDS = 5.0
#: Request latency buckets, in seconds (API calls take milliseconds; SQLite waits longer).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The route label of a request no route matched (a scanner's paths stay one series).
UNMATCHED = "unmatched"


@dataclass(frozen=True)
class MigrationState:
    """One read of where the migrations stand (the values of the migration gauges)."""

    current: str | None
    head: str | None
    at_head: bool
    pending_contracts: int
    #: ``(revision, phase, rows done, rows in all or None)`` of each migration part way.
    part_way: tuple[tuple[str, str, int, int | None], ...]
    lock_held: bool
    #: Replicas alive now, per release (``fleet``).
    replicas: tuple[tuple[str, int], ...]


def read_state(database: Database) -> MigrationState:
    """Read the migration state (blocking: run it in a thread); reads only, never waits."""
    from flowdb.database import fleet

    status = database.status()
    totals = dict(status.totals)
    part_way = tuple(
        (revision, phase, rows, totals.get(revision))
        for revision, phase, rows in status.in_progress
    )
    contracts = fleet.pending_contracts(database, status.current) if status.known else []
    holder = database.migration_running()
    alive = fleet.serving(database, status.tables)
    releases = Tally(replica.flowdb_version for replica in alive.replicas)
    return MigrationState(
        current=status.current,
        head=status.head,
        at_head=status.at_head,
        pending_contracts=len(contracts),
        part_way=part_way,
        lock_held=holder is not None,
        replicas=tuple(sorted(releases.items())),
    )


class MigrationCollector(Collector):
    """The migration gauges, from the last ``MigrationState`` read (``refresh``)."""

    def __init__(self, server: ServerDatabase) -> None:
        self.server = server
        self.state: MigrationState | None = None
        self.read_at = 0.0
        self.up = False
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the state again when the last read is older than ``STATE_EVERY_SECONDS``.

        One read at a time; concurrent scrapes wait for it and reuse it. A ``FlowdbError``
        (database unreachable, busy) keeps the last state and marks it down.
        """
        from anyio import to_thread

        if time.monotonic() - self.read_at < STATE_EVERY_SECONDS:
            return
        async with self._lock:
            if time.monotonic() - self.read_at < STATE_EVERY_SECONDS:
                return
            try:
                self.state = await to_thread.run_sync(read_state, self.server.database)
                self.up = True
            except FlowdbError:
                self.up = False
            self.read_at = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        """The gauges of the last read (none but ``up`` before the first one succeeded)."""
        yield _gauge("flowdb_migration_state_up", "Whether the last read of it succeeded.", self.up)
        state = self.state
        if state is None:
            return
        age = GaugeMetricFamily(
            "flowdb_migration_state_age_seconds", "Seconds since the migration state was read."
        )
        age.add_metric([], time.monotonic() - self.read_at)
        yield age
        current = InfoMetricFamily("flowdb_schema_revision", "The database's schema revision.")
        current.add_metric([], {"revision": state.current or "base"})
        yield current
        head = InfoMetricFamily(
            "flowdb_schema_head", "The head revision this server's code serves."
        )
        head.add_metric([], {"revision": state.head or "base"})
        yield head
        yield _gauge("flowdb_schema_at_head", "Whether the database is at head.", state.at_head)
        yield _gauge(
            "flowdb_migration_pending_contract_revisions",
            "Contract revisions waiting for older replicas to go (0 unless only they are left).",
            state.pending_contracts,
        )
        yield _gauge(
            "flowdb_migration_lock_held",
            "Whether a migration holds the migration lock now.",
            state.lock_held,
        )
        labels = ["revision", "phase"]
        partway = GaugeMetricFamily(
            "flowdb_migration_part_way", "Migrations part way through (1 each).", labels=labels
        )
        done = GaugeMetricFamily(
            "flowdb_migration_rows_done", "Rows a part-way migration has done.", labels=labels
        )
        total = GaugeMetricFamily(
            "flowdb_migration_rows_total",
            "Rows a part-way migration has in all (where it recorded them).",
            labels=labels,
        )
        for revision, phase, rows, rows_total in state.part_way:
            partway.add_metric([revision, phase], 1)
            done.add_metric([revision, phase], rows)
            if rows_total is not None:
                total.add_metric([revision, phase], rows_total)
        yield partway
        yield done
        yield total
        replicas = GaugeMetricFamily(
            "flowdb_replicas_alive",
            "API server replicas with a recent heartbeat, per flowdb release.",
            labels=["release"],
        )
        for release, count in state.replicas:
            replicas.add_metric([release], count)
        yield replicas


class PoolCollector(Collector):
    """The server's connection pools, read at each scrape (one series per engine)."""

    def __init__(self, server: ServerDatabase) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        """Checked out, size and overflow of each pool the server opened so far."""
        labels = ["engine"]
        checked_out = GaugeMetricFamily(
            "flowdb_database_pool_checked_out", "Connections in use.", labels=labels
        )
        size = GaugeMetricFamily(
            "flowdb_database_pool_size", "Connections the pool keeps.", labels=labels
        )
        overflow = GaugeMetricFamily(
            "flowdb_database_pool_overflow",
            "Connections beyond the pool's size open now (negative: room left below it).",
            labels=labels,
        )
        for name, pool in self.server.pools():
            # Pools without a size (NullPool, StaticPool) have none of these numbers.
            if not all(hasattr(pool, what) for what in ("checkedout", "size", "overflow")):
                continue
            checked_out.add_metric([name], pool.checkedout())
            size.add_metric([name], pool.size())
            overflow.add_metric([name], pool.overflow())
        yield checked_out
        yield size
        yield overflow


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


class Metrics:
    """One app's registry: the request metrics it records and the collectors it reads."""

    def __init__(self, server: ServerDatabase) -> None:
        # No ``_created`` series: they double the output and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        labels = ["method", "route", "status"]
        self.requests = Counter(
            "flowdb_http_requests",
            "HTTP requests answered, by route template, method and status.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "flowdb_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.migrations = MigrationCollector(server)
        self.registry.register(self.migrations)
        self.registry.register(PoolCollector(server))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and record how long it took."""
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    async def exposition(self) -> bytes:
        """Every metric in the text format (the migration state read first when stale)."""
        from prometheus_client import generate_latest

        await self.migrations.refresh()
        return generate_latest(self.registry)

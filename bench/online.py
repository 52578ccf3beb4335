"""Case 7: an upgrade of a busy database, as the API's clients see it.

A database at the revision before the data migrations is filled in bulk, then
upgraded to head twice, on copies, while a load generator plays the API: four
connections, about 100 statements per second in all, each statement one of
"read a run by id", "rename a run", "insert a log line", "read a run's logs" (valid
on the old and the new schema alike), each in its own transaction, with the server's
query timeout. Once the upgrade is today's ``flowdb database upgrade -y`` (online
phases); once the same statements run as one offline transaction, the way migrations
ran before (the baseline). Reported: the upgrade's time against the offline one, the
worst single statement's wait, the 99th percentile, and how many statements failed.

On SQLite the same load goes through connections set up like the server's (WAL, a
30 s busy timeout): writers queue behind the migration's write lock.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa

from bench.common import PYTHON, Row, Timing, run
from bench.data_migrations import build_database
from bench.databases import Scratch, flowdb_env
from bench.sql import dry_run_sql, single_transaction, write_script

BEFORE = "1b5e8c2f7d43"  # the revision before the re-index and the data migrations
CLIENTS = 4
STATEMENTS_PER_SECOND = 100
SERVER_QUERY_TIMEOUT_MS = 30_000


@dataclass
class LoadReport:
    """What the clients saw while one upgrade ran."""

    waits: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: The waits of the writes only (renames and log inserts), for the SQLite expand case.
    write_waits: list[float] = field(default_factory=list)

    @property
    def worst(self) -> float:
        return max(self.waits, default=0.0)

    @property
    def p99(self) -> float:
        if len(self.waits) < 2:
            return self.worst
        return statistics.quantiles(self.waits, n=100)[98]


class Load:
    """Four client connections issuing the API's statements until stopped."""

    def __init__(self, url: str, run_ids: list[uuid.UUID]) -> None:
        self.url = url
        self.run_ids = run_ids
        self.report = LoadReport()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(n,)) for n in range(CLIENTS)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _engine(self) -> sa.Engine:
        from flowdb.database.target import Database

        url = Database.from_url(self.url).dialect.sync_url
        if self.url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 30})

            @sa.event.listens_for(engine, "connect")
            def _like_the_server(dbapi_connection: object, _record: object) -> None:
                cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

            return engine
        options = f"-c statement_timeout={SERVER_QUERY_TIMEOUT_MS}"
        return sa.create_engine(url, connect_args={"options": options})

    def _client(self, number: int) -> None:
        rng = random.Random(number)
        engine = self._engine()
        pause = CLIENTS / STATEMENTS_PER_SECOND
        is_sqlite = self.url.startswith("sqlite")
        try:
            with engine.connect() as connection:
                while not self.stop.is_set():
                    run_id = rng.choice(self.run_ids)
                    bound = run_id.hex if is_sqlite else run_id
                    kind = rng.randrange(4)
                    started = time.monotonic()
                    try:
                        with connection.begin():
                            connection.execute(*self._statement(kind, bound, is_sqlite))
                    except sa.exc.DBAPIError as error:
                        with self.lock:
                            self.report.failures.append(str(error.orig).splitlines()[0])
                    waited = time.monotonic() - started
                    with self.lock:
                        self.report.waits.append(waited)
                        if kind in (1, 2):
                            self.report.write_waits.append(waited)
                    time.sleep(max(pause - waited, 0))
        finally:
            engine.dispose()

    @staticmethod
    def _statement(
        kind: int, run_id: object, is_sqlite: bool
    ) -> tuple[sa.TextClause, dict[str, object]]:
        if kind == 0:
            return sa.text("SELECT id, name, state_type FROM flow_run WHERE id = :id"), {
                "id": run_id
            }
        if kind == 1:
            return sa.text("UPDATE flow_run SET name = :name WHERE id = :id"), {
                "id": run_id,
                "name": f"renamed-{uuid.uuid4().hex[:6]}",
            }
        if kind == 2:
            log_id = uuid.uuid4()
            return (
                sa.text(
                    "INSERT INTO log (id, name, level, flow_run_id, message, timestamp) "
                    "VALUES (:log, 'bench', 20, :id, 'a line', CURRENT_TIMESTAMP)"
                ),
                {"log": log_id.hex if is_sqlite else log_id, "id": run_id},
            )
        return (
            sa.text("SELECT message FROM log WHERE flow_run_id = :id ORDER BY timestamp LIMIT 20"),
            {"id": run_id},
        )


def _sample_run_ids(url: str, count: int = 2_000) -> list[uuid.UUID]:
    from flowdb.database.target import Database

    engine = sa.create_engine(Database.from_url(url).dialect.sync_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text(f"SELECT id FROM flow_run LIMIT {count}"))
            return [
                value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
                for (value,) in rows
            ]
    finally:
        engine.dispose()


def _under_load(
    url: str, run_ids: list[uuid.UUID], command: list[str], lead: float, tail: float
) -> tuple[float, LoadReport]:
    """Run ``command`` (an upgrade) while the load runs; the load starts ``lead`` seconds
    first (the clients at their steady rate) and ends ``tail`` seconds after."""
    with Load(url, run_ids) as load:
        time.sleep(lead)
        started = time.perf_counter()
        run(command, env=flowdb_env(url))
        elapsed = time.perf_counter() - started
        time.sleep(tail)
    return elapsed, load.report


def bench_online_upgrade(
    scratch: Scratch, sizes: dict[str, int], lead: float = 1.0, tail: float = 0.5
) -> list[Row]:
    """Upgrade a busy database online and offline; what the clients saw, per dialect.

    ``lead``/``tail``: seconds of load before and after each upgrade (shorter when tiny).
    """
    rows: list[Row] = []
    for dialect, runs in sizes.items():
        template = build_database(scratch, dialect, runs, before=BEFORE)
        run_ids = _sample_run_ids(template)
        sql = single_transaction(dry_run_sql(template, f"{BEFORE}:head"))
        script = write_script(scratch.folder, f"online-offline-{dialect}.sql", sql)

        offline_copy = scratch.copy(template)
        offline_time, offline = _under_load(
            offline_copy,
            run_ids,
            [PYTHON, "-m", "bench.floor", offline_copy, str(script)],
            lead,
            tail,
        )
        scratch.drop(offline_copy)
        online_copy = scratch.copy(template)
        online_time, online = _under_load(
            online_copy,
            run_ids,
            [PYTHON, "-m", "flowdb", "database", "upgrade", "-y"],
            lead,
            tail,
        )
        scratch.drop(online_copy)
        scratch.drop(template)

        size = f"{runs:,} flow runs, {runs // 5:,} task runs, {2 * runs:,} logs"
        rows.append(
            Row(
                f"{dialect}: upgrade time under load ({size})",
                Timing([online_time]),
                "the same SQL offline (one transaction)",
                Timing([offline_time]),
                target=2.0 if dialect == "postgresql" else None,
                note=f"{len(online.waits):,} statements online, {len(offline.waits):,} offline",
            )
        )
        rows.append(
            Row(
                f"{dialect}: worst statement wait during the upgrade",
                Timing([online.worst]),
                "offline",
                Timing([offline.worst]),
                limit=1.0 if dialect == "postgresql" else None,
                note=f"p99 {online.p99 * 1000:.0f} ms (offline {offline.p99 * 1000:.0f} ms); "
                f"failed statements {len(online.failures)} (offline {len(offline.failures)})"
                + (f"; first failure: {online.failures[0][:80]}" if online.failures else ""),
            )
        )
    return rows

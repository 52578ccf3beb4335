"""Case 13: a rolling upgrade under load, from the previous release to this one.

The procedure of README "Rolling upgrades", run for real on PostgreSQL:

1. The previous release (``PREVIOUS``, a commit of ``releases.txt``, installed from this
   repository's git history by ``bench.releases``) makes the database at its head;
   ``runs`` flow runs are written with bulk SQL.
2. Two replicas of the previous release serve it (``flowdb server start`` from its
   virtualenv, migrate-on-start off), under a bounded mixed load: reads, creates and
   state changes of flow runs, sent by ``Load`` to a replica that answered
   ``/api/ready`` 200 within the last 200 ms (``Rotation`` polls each replica in its
   own thread).
3. This release's ``flowdb database upgrade -y`` applies the expand revisions and
   stops before the contract (the old replicas serve).
4. Two replicas of this release start and join the rotation once ready; the old
   ones leave the rotation and stop one at a time (each after its requests in
   flight are answered).
5. The contract runs: the new replicas' heartbeat runs it once no older replica is
   left; the operator's second ``upgrade -y`` then finds the database at head (or
   runs it, when no heartbeat came first).
6. The load goes on ``tail`` seconds at head; every request is recorded (time,
   replica, route, status, latency, error).

``rolling_upgrade`` returns the record; ``report_rolling`` makes its table rows and draws
latency over time with the phases marked (``rolling.png`` next to the results file). The
test (tests/server/test_rolling_upgrade.py) runs the case at the tiny size (``TINY``),
asserts the record and checks the table, as the suite's tiny run of every other case does.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.common import PYTHON, Row, Timing
from bench.databases import Scratch
from bench.releases import release_python
from bench.server import start_server, stop_server

#: The previous release: the landed main before the rolling-upgrade work began (listed
#: in releases.txt). It writes no heartbeat, the hardest case: its
#: replicas are found only by their PostgreSQL sessions. Later releases' replicas beat.
PREVIOUS = "d43db95"
#: A replica is in rotation while it answered ready within this many seconds.
FRESH = 0.2
#: Seconds between two readiness polls of one replica.
POLL_EVERY = 0.05
#: Seconds a readiness probe may take before it counts as "not ready". Generous: on a
#: loaded machine the previous release's readiness (a whole-schema inspection per call)
#: takes 1-2 s; a shorter timeout measures the machine, not the upgrade.
PROBE_TIMEOUT = 10.0
#: Load threads, and the pause each takes between two requests (bounds the load).
WORKERS = 4
PAUSE = 0.05

#: Bulk fill at the previous release's head: 10 flows, ``runs`` flow runs.
FILL = [
    "INSERT INTO flow (id, name) SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(i), 12, '0'))"
    "::uuid, 'flow-' || i FROM generate_series(0, 9) AS i",
    "INSERT INTO flow_run (id, flow_id, name, state_type, state_name, state_timestamp, "
    "expected_start_time, start_time, end_time) SELECT gen_random_uuid(), "
    "('00000000-0000-0000-0000-' || lpad(to_hex(i % 10), 12, '0'))::uuid, 'run-' || i, "
    "(CASE i % 3 WHEN 0 THEN 'COMPLETED' WHEN 1 THEN 'RUNNING' END)::state_type, "
    "CASE i % 3 WHEN 0 THEN 'Completed' WHEN 1 THEN 'Running' END, "
    "CASE WHEN i % 3 < 2 THEN now() - make_interval(secs => i) END, "
    "now() - make_interval(secs => i), "
    "CASE WHEN i % 3 < 2 THEN now() - make_interval(secs => i) END, "
    "CASE WHEN i % 3 = 0 THEN now() - make_interval(secs => i / 2) END "
    "FROM generate_series(1, :runs) AS i",
    "ANALYZE",
]


@dataclass(frozen=True)
class Request:
    """One request of the load: when (seconds since the start), where, what, how it went."""

    at: float
    replica: str
    route: str
    status: int | None
    latency: float
    error: str = ""
    #: Sent to a replica that answered ready within ``FRESH`` s (else: its latest probe).
    fresh: bool = True

    @property
    def failed(self) -> bool:
        """A 5xx answer, a connection error, or no replica in rotation to send it to."""
        return self.status is None or self.status >= 500


@dataclass
class Replica:
    """One server process and what the rotation knows of it."""

    name: str
    release: str
    port: int
    process: subprocess.Popen[str]
    wanted: bool = False  # the operator put it in rotation
    last_ready: float = -1.0
    last_status: int | None = None
    in_flight: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Rotation:
    """The replicas and which of them take requests: wanted and ready within ``FRESH`` s.

    Each replica is polled on ``/api/ready`` in its own thread; every poll records how
    many replicas were in rotation at that moment (``sizes``).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.replicas: list[Replica] = []
        #: At every poll: (when, replicas ready within FRESH s, replicas whose latest probe
        #: answered 200), counted among the replicas in rotation.
        self.sizes: list[tuple[float, int, int]] = []
        #: Every readiness poll: (when it was answered, replica, status or None, latency).
        self.probes: list[tuple[float, str, int | None, float]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def add(self, replica: Replica) -> None:
        """Start polling ``replica`` (it takes requests once ``wanted`` and ready)."""
        with self.lock:
            self.replicas.append(replica)
        thread = threading.Thread(target=self._poll, args=(replica,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll(self, replica: Replica) -> None:
        with httpx.Client(timeout=PROBE_TIMEOUT) as client:
            while not self._stop.is_set() and replica.process.poll() is None:
                started = time.perf_counter()
                try:
                    status: int | None = client.get(f"{replica.base}/api/ready").status_code
                except httpx.HTTPError:
                    status = None
                now = self.clock()
                with self.lock:
                    self.probes.append((now, replica.name, status, time.perf_counter() - started))
                    replica.last_status = status
                    if status == 200:
                        replica.last_ready = now
                    if any(r.wanted for r in self.replicas):
                        fresh, ready = self._serving(now), self._ready()
                        self.sizes.append((now, len(fresh), len(ready)))
                self._stop.wait(POLL_EVERY)

    def _serving(self, now: float) -> list[Replica]:
        return [r for r in self.replicas if r.wanted and now - r.last_ready <= FRESH]

    def _ready(self) -> list[Replica]:
        return [r for r in self.replicas if r.wanted and r.last_status == 200]

    def wait_ready(self, replica: Replica, timeout: float = 300) -> None:
        """Block until ``replica`` answered ready (a poll of its own thread)."""
        deadline = time.monotonic() + timeout
        while replica.last_ready < 0:
            if replica.process.poll() is not None:
                raise RuntimeError(f"{replica.name} exited: {_stderr(replica.process)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{replica.name} was not ready within {timeout:.0f} s")
            time.sleep(0.05)

    def pick(self) -> tuple[Replica | None, bool]:
        """A replica to send a request to (least requests in flight), counted as busy,
        and whether it answered ready within ``FRESH`` s.

        A replica whose readiness answered 200 within ``FRESH`` s first; when none did
        (a slow probe on a loaded machine), one whose latest probe answered 200 (the
        request is marked not fresh); ``None`` when no wanted replica's latest probe
        answered 200.
        """
        with self.lock:
            fresh = self._serving(self.clock())
            serving = fresh or self._ready()
            if not serving:
                return None, False
            chosen = min(serving, key=lambda r: (r.in_flight, random.random()))
            chosen.in_flight += 1
            return chosen, bool(fresh)

    def done(self, replica: Replica) -> None:
        """``replica`` answered one request."""
        with self.lock:
            replica.in_flight -= 1

    def take_out(self, replica: Replica, timeout: float = 60) -> None:
        """Out of rotation, then wait until its requests in flight are answered."""
        with self.lock:
            replica.wanted = False
        deadline = time.monotonic() + timeout
        while replica.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        """Stop polling."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)


class Load:
    """``WORKERS`` threads sending reads, creates and state changes of flow runs.

    Each thread owns the runs it created: it moves them RUNNING then COMPLETED, and
    remembers each acknowledged state (``acknowledged``: run id -> last state type).
    """

    def __init__(self, rotation: Rotation, flow_id: str, sample: list[str]) -> None:
        self.rotation = rotation
        self.flow_id = flow_id
        self.sample = sample
        self.requests: list[Request] = []
        self.acknowledged: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, args=(n,), daemon=True) for n in range(WORKERS)
        ]

    def start(self) -> None:
        """Start the load threads."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the load threads and wait for their last requests."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _work(self, number: int) -> None:
        chooser = random.Random(number)
        mine: list[tuple[str, int]] = []  # (run id, states entered so far)
        with httpx.Client(timeout=60.0) as client:
            while not self._stop.is_set():
                roll = chooser.random()
                if roll < 0.5 or (roll < 0.8 and not mine):
                    run_id = chooser.choice(self.sample + [m[0] for m in mine[-20:]])
                    self._send(client, "GET", f"/api/flow_runs/{run_id}", "read", None)
                elif roll < 0.8:
                    index = chooser.randrange(len(mine))
                    run_id, entered = mine[index]
                    state = ("RUNNING", "COMPLETED")[entered]
                    answer = self._send(
                        client,
                        "POST",
                        f"/api/flow_runs/{run_id}/set_state",
                        "set_state",
                        {"type": state},
                    )
                    if answer is not None and answer.status_code in (200, 201):
                        with self._lock:
                            self.acknowledged[run_id] = state
                        if entered == 1:
                            mine.pop(index)
                        else:
                            mine[index] = (run_id, 1)
                else:
                    body = {"flow_id": self.flow_id, "name": f"rolling-{uuid.uuid4().hex[:8]}"}
                    answer = self._send(client, "POST", "/api/flow_runs", "create", body)
                    if answer is not None and answer.status_code == 201:
                        run_id = str(answer.json()["id"])
                        with self._lock:
                            self.acknowledged[run_id] = None
                        mine.append((run_id, 0))
                self._stop.wait(PAUSE)

    def _send(
        self, client: httpx.Client, method: str, path: str, route: str, body: Any
    ) -> httpx.Response | None:
        replica, fresh = self.rotation.pick()
        at = self.rotation.clock()
        if replica is None:
            self._record(Request(at, "-", route, None, 0.0, "no replica in rotation", False))
            return None
        started = time.perf_counter()
        try:
            answer = client.request(method, f"{replica.base}{path}", json=body)
        except httpx.HTTPError as exc:
            latency = time.perf_counter() - started
            self._record(Request(at, replica.name, route, None, latency, repr(exc), fresh))
            return None
        finally:
            self.rotation.done(replica)
        latency = time.perf_counter() - started
        error = answer.text[:200] if answer.status_code >= 400 else ""
        self._record(Request(at, replica.name, route, answer.status_code, latency, error, fresh))
        return answer

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


@dataclass
class Outcome:
    """What one rolling upgrade did and saw."""

    runs: int
    requests: list[Request]
    sizes: list[tuple[float, int, int]]
    probes: list[tuple[float, str, int | None, float]]
    #: (seconds since the start, what happened), in order.
    phases: list[tuple[float, str]]
    upgrade_output: str
    contract_by: str
    missing_writes: list[str]
    check_code: int
    check_output: str
    old_exit_codes: list[int | None]
    at_head: bool
    fill_seconds: float = 0.0

    def phase_at(self, label: str) -> float:
        """When the phase starting with ``label`` began."""
        return next(t for t, name in self.phases if name.startswith(label))

    def window(self, name: str) -> list[Request]:
        """The requests before the upgrade, during it (to head) or after it."""
        start, head = self.phase_at("upgrade -y"), self.phase_at("at head")
        if name == "before":
            return [r for r in self.requests if r.at < start]
        if name == "during":
            return [r for r in self.requests if start <= r.at <= head]
        return [r for r in self.requests if r.at > head]

    @property
    def fewest_ready(self) -> int:
        """The fewest replicas in rotation whose latest probe answered 200, at any poll."""
        return min((ready for _, _, ready in self.sizes), default=0)

    @property
    def polls_without_fresh(self) -> int:
        """Polls at which no replica in rotation had answered ready within ``FRESH`` s."""
        return sum(1 for _, fresh, _ in self.sizes if fresh == 0)

    def probe_latency(self, prefix: str, share: float) -> float:
        """A quantile of the 200 answers' latency of ``/api/ready`` on replicas ``prefix*``."""
        latencies = [p[3] for p in self.probes if p[1].startswith(prefix) and p[2] == 200]
        return percentile(latencies, share)

    @property
    def failures(self) -> list[Request]:
        """Every failed request, first to last."""
        return [r for r in self.requests if r.failed]


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile (0..1) of ``values`` by the nearest-rank method."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _stderr(process: subprocess.Popen[str]) -> str:
    try:
        return process.communicate(timeout=5)[1][-2000:]
    except (subprocess.TimeoutExpired, ValueError):
        return ""


def _env(url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "FLOWDB_DATABASE_URL": url, "PYTHONUNBUFFERED": "1", **extra}


def _start(name: str, release: str, python: str, env: dict[str, str]) -> Replica:
    command = [python, "-m", "flowdb", "server", "start", "--log-level", "warning", "--port"]
    process, port = start_server(command, env)
    return Replica(name, release, port, process)


def _stop(process: subprocess.Popen[str]) -> int | None:
    return stop_server(process, timeout=60)


def _flowdb(python: str, url: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m flowdb ARGS`` on ``url``, output captured, its exit code not checked."""
    return subprocess.run(
        [python, "-m", "flowdb", *args],
        env=_env(url),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def make_previous_database(url: str, runs: int) -> str:
    """The previous release makes ``url`` at its head; ``runs`` flow runs by bulk SQL.

    Returns the Python of the previous release's virtualenv.
    """
    python = str(release_python(PREVIOUS))
    made = _flowdb(python, url, "database", "upgrade", "-y", timeout=600)
    if made.returncode != 0:
        raise RuntimeError(f"the previous release's upgrade failed: {made.stderr}")
    engine = sa.create_engine(url.replace("+asyncpg", "+psycopg"))
    try:
        with engine.begin() as connection:
            for statement in FILL:
                connection.execute(sa.text(statement), {"runs": runs})
    finally:
        engine.dispose()
    return python


def _sample(url: str, count: int = 500) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT id FROM flow_run TABLESAMPLE SYSTEM (1) LIMIT :n"), {"n": count}
            ).scalars()
            found = [str(value) for value in rows]
            if len(found) < count:
                rows = connection.execute(
                    sa.text("SELECT id FROM flow_run LIMIT :n"), {"n": count}
                ).scalars()
                found = [str(value) for value in rows]
            return found
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            value = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            return None if value is None else str(value)
    finally:
        engine.dispose()


def _missing(url: str, acknowledged: dict[str, str | None]) -> list[str]:
    """Acknowledged writes not found as acknowledged: one description each."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            stored = {
                str(run_id): state
                for run_id, state in connection.execute(
                    sa.text(
                        "SELECT id, CAST(state_type AS text) FROM flow_run WHERE id = ANY(:ids)"
                    ),
                    {"ids": [uuid.UUID(k) for k in acknowledged]},
                )
            }
    finally:
        engine.dispose()
    missing = []
    for run_id, state in acknowledged.items():
        if run_id not in stored:
            missing.append(f"{run_id}: created, not found")
        elif state is not None and stored[run_id] != state:
            missing.append(f"{run_id}: acknowledged {state}, stored {stored[run_id]}")
    return missing


def rolling_upgrade(
    url: str,
    runs: int,
    settle: float = 5.0,
    tail: float = 5.0,
    heartbeat: float = 5.0,
    say: Callable[[str], None] = lambda _: None,
) -> Outcome:
    """Run the whole procedure on the PostgreSQL database ``url`` (empty); its record.

    ``settle``: seconds of load before the upgrade (and between steps that wait on
    nothing); ``tail``: seconds of load at head; ``heartbeat``: the new replicas'
    ``FLOWDB_SERVER_HEARTBEAT_INTERVAL``. The replicas are stopped when it returns.
    """
    from flowdb.database.history import load_history

    head = load_history().head
    began = time.monotonic()
    filled = time.monotonic()
    old_python = make_previous_database(url, runs)
    fill_seconds = time.monotonic() - filled
    say(f"previous release {PREVIOUS} made the database with {runs:,} runs in {fill_seconds:.1f} s")

    def clock() -> float:
        return time.monotonic() - began

    phases: list[tuple[float, str]] = []

    def mark(name: str) -> None:
        phases.append((clock(), name))
        say(f"{clock():8.2f} s  {name}")

    rotation = Rotation(clock)
    replicas: list[Replica] = []
    load: Load | None = None
    old_codes: list[int | None] = []
    try:
        old_env = _env(url, FLOWDB_MIGRATE_ON_START="false")
        for number in (1, 2):
            replicas.append(_start(f"old-{number}", PREVIOUS, old_python, old_env))
        for replica in replicas:
            rotation.add(replica)
            rotation.wait_ready(replica)
            replica.wanted = True
        flow_id = "00000000-0000-0000-0000-000000000000"
        load = Load(rotation, flow_id, _sample(url))
        mark("load on two old replicas")
        load.start()
        time.sleep(settle)

        mark("upgrade -y (this release)")
        upgraded = _flowdb(PYTHON, url, "database", "upgrade", "-y", timeout=3600)
        upgrade_output = (upgraded.stdout + upgraded.stderr).strip()
        if upgraded.returncode != 0:
            raise RuntimeError(f"upgrade -y exited {upgraded.returncode}: {upgrade_output}")
        mark(f"expand done at {_revision(url)}")

        new_env = _env(url, FLOWDB_SERVER_HEARTBEAT_INTERVAL=str(heartbeat))
        fresh = [_start(f"new-{n}", "this", PYTHON, new_env) for n in (1, 2)]
        for replica in fresh:
            replicas.append(replica)
            rotation.add(replica)
        for replica in fresh:
            rotation.wait_ready(replica)
            replica.wanted = True
        mark("new replicas in rotation")
        time.sleep(settle)

        for replica in replicas[:2]:
            rotation.take_out(replica)
            mark(f"{replica.name} out of rotation")
            old_codes.append(_stop(replica.process))
            mark(f"{replica.name} stopped")
            time.sleep(settle / 2)

        contract_by = ""
        deadline = time.monotonic() + 3 * heartbeat + 30
        while time.monotonic() < deadline and _revision(url) != head:
            time.sleep(0.2)
        if _revision(url) == head:
            contract_by = "a new replica's heartbeat"
        again = _flowdb(PYTHON, url, "database", "upgrade", "-y", timeout=3600)
        upgrade_output += "\n--- second upgrade -y ---\n" + (again.stdout + again.stderr).strip()
        if not contract_by and _revision(url) == head:
            contract_by = "the operator's second upgrade -y"
        at_head = _revision(url) == head
        mark("at head" if at_head else "not at head")
        time.sleep(tail)
        mark("load stopped")
    finally:
        if load is not None:
            load.stop()
        rotation.close()
        for replica in replicas:
            if replica.process.poll() is None:
                _stop(replica.process)
    requests = sorted(load.requests if load else [], key=lambda r: r.at)
    checked = _flowdb(PYTHON, url, "database", "check", timeout=600)
    return Outcome(
        runs=runs,
        requests=requests,
        sizes=rotation.sizes,
        probes=rotation.probes,
        phases=phases,
        upgrade_output=upgrade_output,
        contract_by=contract_by,
        missing_writes=_missing(url, load.acknowledged if load else {}),
        check_code=checked.returncode,
        check_output=(checked.stdout + checked.stderr).strip(),
        old_exit_codes=old_codes,
        at_head=at_head,
        fill_seconds=fill_seconds,
    )


def summary(outcome: Outcome) -> list[Row]:
    """The table rows: per window, requests, failures, p50 and p99 latency."""
    rows: list[Row] = []
    before = [r.latency for r in outcome.window("before") if not r.failed]
    baseline = Timing([percentile(before, 0.99)])
    for name in ("before", "during", "after"):
        window = outcome.window(name)
        latencies = [r.latency for r in window if not r.failed]
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        failed = sum(r.failed for r in window)
        rows.append(
            Row(
                f"p99 latency {name} the upgrade, {outcome.runs:,} runs",
                Timing([p99]),
                "p99 before the upgrade",
                baseline,
                target=2.0 if name == "during" else None,
                note=f"{len(window):,} requests, {failed} failed; p50 {p50 * 1000:.1f} ms",
            )
        )
    return rows


def describe(outcome: Outcome) -> str:
    """The phases, with the rotation's smallest size and what the checks found."""
    lines = ["| at | phase |", "| ---: | --- |"]
    lines += [f"| {at:.2f} s | {name} |" for at, name in outcome.phases]
    stale = sum(not r.fresh for r in outcome.requests)
    lines += [
        "",
        f"- {len(outcome.requests):,} requests, {len(outcome.failures)} failed; "
        f"fewest replicas in rotation whose latest probe answered 200: {outcome.fewest_ready} "
        f"({len(outcome.sizes):,} polls); polls with none answered within {FRESH * 1000:.0f} "
        f"ms: {outcome.polls_without_fresh}; requests sent on a latest-probe 200 only: {stale}",
        f"- /api/ready p50/p99: previous release {outcome.probe_latency('old', 0.5) * 1000:.0f}"
        f"/{outcome.probe_latency('old', 0.99) * 1000:.0f} ms, this release "
        f"{outcome.probe_latency('new', 0.5) * 1000:.0f}"
        f"/{outcome.probe_latency('new', 0.99) * 1000:.0f} ms",
        f"- contract run by {outcome.contract_by or 'nobody'}; "
        f"check exit {outcome.check_code}; acknowledged writes missing: "
        f"{len(outcome.missing_writes)}",
        f"- old replicas' exit codes: {outcome.old_exit_codes}; "
        f"data made in {outcome.fill_seconds:.1f} s",
    ]
    return "\n".join(lines) + "\n"


def draw(outcome: Outcome, path: Path) -> bool:
    """Request latency over time with the phases marked, into ``path``; ``False`` without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(11, 5))
    for route, colour in (
        ("read", "tab:blue"),
        ("create", "tab:green"),
        ("set_state", "tab:orange"),
    ):
        chosen = [r for r in outcome.requests if r.route == route and not r.failed]
        axes.scatter(
            [r.at for r in chosen], [r.latency * 1000 for r in chosen], s=4, c=colour, label=route
        )
    failed = outcome.failures
    if failed:
        axes.scatter(
            [r.at for r in failed], [1] * len(failed), s=20, c="red", marker="x", label="failed"
        )
    for at, name in outcome.phases:
        axes.axvline(at, color="grey", linestyle="--", linewidth=0.8)
        axes.text(at, 1.02, name, rotation=30, fontsize=7, transform=axes.get_xaxis_transform())
    axes.set_yscale("log")
    axes.set_xlabel("seconds since the database was made")
    axes.set_ylabel("request latency (ms)")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


#: The tiny size's windows (``settle``, ``tail``, ``heartbeat`` seconds): a second of load
#: per window and a 1 s heartbeat (the contract comes a beat after the last old replica
#: stops): enough requests in each window for its row. The suite's rolling-upgrade test
#: (tests/server/test_rolling_upgrade.py) runs this case at the tiny size and asserts it.
TINY = {"settle": 1.0, "tail": 1.0, "heartbeat": 1.0}
#: The tiny size's flow runs.
TINY_RUNS = 2_000


def bench_rolling(scratch: Scratch, runs: int, output: Path, tiny: bool) -> list[Row]:
    """Case 13: one rolling upgrade of ``runs`` flow runs; its table rows, and its PNG."""
    url = scratch.new_url("postgresql")
    windows = TINY if tiny else {"settle": 15.0, "tail": 10.0, "heartbeat": 5.0}
    outcome = rolling_upgrade(url, runs, **windows, say=lambda line: print(line, file=sys.stderr))
    scratch.drop(url)
    return report_rolling(outcome, output, tiny)


def report_rolling(outcome: Outcome, output: Path, tiny: bool) -> list[Row]:
    """The table rows of ``outcome``; its phases (Markdown) and PNG next to ``output``."""
    runs = outcome.runs
    print(describe(outcome), file=sys.stderr)
    if outcome.failures:
        print("failed requests:", *outcome.failures[:10], sep="\n", file=sys.stderr)
    picture = output.with_name("rolling.png" if not tiny else f"{output.stem}-rolling.png")
    if draw(outcome, picture):
        print(f"drew {picture}", file=sys.stderr)
    phases = picture.with_suffix(".md")
    phases.write_text(
        f"# Rolling upgrade, {runs:,} flow runs: phases and checks\n\n{describe(outcome)}\n"
        f"What the operator's commands printed:\n\n```\n{outcome.upgrade_output}\n```\n",
        encoding="utf-8",
    )
    print(f"wrote {phases}", file=sys.stderr)
    rows = summary(outcome)
    rows.append(
        Row(
            "whole procedure, first request to last",
            Timing([outcome.requests[-1].at - outcome.requests[0].at if outcome.requests else 0]),
            "-",
            None,
            note=(
                f"{len(outcome.requests):,} requests, {len(outcome.failures)} failed, "
                f"≥ {outcome.fewest_ready} replica(s) ready in rotation, "
                f"{outcome.polls_without_fresh} polls without one ready in {FRESH * 1000:.0f} ms; "
                f"contract by {outcome.contract_by}; "
                f"check exit {outcome.check_code}; {len(outcome.missing_writes)} writes missing"
            ),
        )
    )
    return rows

"""Sudden death: SIGKILL ``flowdb database upgrade`` at chosen and random moments.

After every kill the database must be at a revision of the history. Its schema must
equal (by reflection) the schema of a clean database upgraded to that same revision,
unless an online migration is part way through (``flowdb_migration_progress`` names
it, and it must be the next revision); the rows seeded before the upgrade must all
still be there; and a second upgrade must reach head with exactly the schema and the
data (row checksums) of an uninterrupted upgrade of the same database.

* Random kills: 36 runs per dialect in blocks of ``RUNS_PER_BLOCK`` (one test item
  each, seeded by dialect and block, so a failure replays); a third start from an
  empty database, the rest from a database at the third revision holding a few
  thousand rows, so that kills also land inside the data migrations. Within a block
  the kill moments are drawn from evenly spaced strata of the pending steps (for the
  seeded runs, of the steps between the first and the last report, so the block's
  landings spread over the history however its seed falls).
* Deterministic kills: one run per phase and per batch of every online migration,
  the process killing itself right after that point (inside the phase's transaction,
  or right after a batch committed), found by an uninterrupted run's events; blocks
  of ``EVENTS_PER_BLOCK`` events per item, the last block running to the end (a block
  that finds the end stops there; only the tail's blocks may).
* The deterministic sample CI runs: on each dialect, one kill at the first event of
  each kind the uninterrupted run reports (``event_kind``: the start of a phase of each
  kind, ``add``/``validate`` of a constraint, ``prove``, ``index``, ``drop index``,
  ``backfill``, ``contract``; a batch committed part way through a backfill, and its
  last batch), one at the last event and one past it (the run then ends unkilled).
  Every distinct place a kill can land in an online migration is so covered on each
  dialect; a kind that appears in the history and is not in ``EVENT_KINDS`` fails the
  sample's own item, so the sample grows with the history. The blocks above repeat
  every kind at every position of the history: ``pytest -m exhaustive`` runs them.

CI runs the random block in ``RUN_SAMPLE`` (six kills per dialect, two from empty and
four from the seeded database, over the strata of the history) and the kinds' sample;
``pytest -m exhaustive`` runs all the blocks. The clean schemas, the seeded database and its
uninterrupted upgrade's data and events (per batch size) are made once per dialect and
test process (``prepared``). In this process and in the children that kill themselves at
an event, SQLite's pause between backfill batches (``Features.batch_pause``, a turn for
the server's waiting writers: there are none here) is 0; those children are forked from
a helper that has imported flowdb once (``tests.forkserver``: real processes, really
killed, without an interpreter start each). The randomly killed children are the real
``flowdb`` command, started afresh, and keep the pause: their kill moments include the
start-up itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.database.dialects.sqlite import SqliteDialect
from flowdb.database.events import PhaseStarted, Progress
from flowdb.database.history import load_history
from tests import forkserver
from tests.dbtools import (
    ADMIN_URL,
    create_postgres_database,
    data_checksums,
    drop_postgres_database,
    in_progress,
    revision_of,
    schema_snapshot,
    shared_by_workers,
    sqlite_path,
    sync_engine,
)

RUNS = 36
RUNS_PER_BLOCK = 6
EVENTS_PER_BLOCK = 4
EVENT_BLOCKS = 16
#: The first event block of the tail, the blocks that may find the end of the history.
#: The tail was one item (about 200 s under load, longer on PostgreSQL); cut into blocks
#: of ``EVENTS_PER_BLOCK`` it spreads over the workers. The history has 56 events on
#: SQLite and 77 on PostgreSQL (the last block runs to the end, whatever
#: their number: 192 s on PostgreSQL when it was block 12 of 13, so there are 16 now; a
#: tail block past the end finds it at once), so an earlier block reaching the end means
#: the blocks no longer fit.
TAIL_BLOCK = 7
#: The blocks CI runs; ``-m exhaustive`` runs the others (every event block: CI kills
#: at the first event of each kind instead, ``EVENT_KINDS``).
RUN_SAMPLE = {0}
EVENT_SAMPLE: set[int] = set()
#: The kinds of event (``event_kind``) each dialect's history reports, in CI's sample.
EVENT_KINDS = {
    "sqlite": ["contract", "index", "drop index", "backfill", "batch", "last batch"],
    "postgresql": [
        "add",
        "validate",
        "index",
        "contract",
        "drop index",
        "backfill",
        "batch",
        "last batch",
        "prove",
    ],
}
SEEDED_AT = "c5d8e3f2a9b1"  # flow, flow_run, task_run and log exist from here on
SEEDED_TABLES = ("flow", "flow_run", "task_run", "log")
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_batch_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pause between SQLite's backfill batches in this process (no writer waits here)."""
    features = dataclasses.replace(SqliteDialect.features, batch_pause=0.0)
    monkeypatch.setattr(SqliteDialect, "features", features)


def seed(url: str) -> dict[str, set[str]]:
    """Insert flows, flow runs, task runs and logs in the schema of ``SEEDED_AT``.

    Returns the ids per table, as hex strings, to find them again after the crash.
    """
    is_sqlite = url.startswith("sqlite")

    def stored(value: Any) -> Any:
        if isinstance(value, uuid.UUID):
            return value.hex if is_sqlite else value
        if isinstance(value, dt.datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S.%f") if is_sqlite else value
        return value

    flows = [{"id": uuid.uuid4(), "name": f"flow-{n}"} for n in range(20)]
    runs = [
        {
            "id": uuid.uuid4(),
            "flow_id": flows[n % 20]["id"],
            "name": f"run-{n}",
            "state_type": ("COMPLETED", "RUNNING", "FAILED", None)[n % 4],
            "state_timestamp": T0 + dt.timedelta(seconds=n),
            "start_time": None if n % 3 == 0 else T0 + dt.timedelta(seconds=n),
        }
        for n in range(1500)
    ]
    tasks = [
        {
            "id": uuid.uuid4(),
            "flow_run_id": runs[n % 1500]["id"],
            "task_key": f"task-{n}:{n % 7}",
            "name": f"task-{n}",
        }
        for n in range(3000)
    ]
    logs = [
        {
            "id": uuid.uuid4(),
            "logger": "flow",
            "level": 20,
            # every third line of a task run only, as releases before b2a6d8f0c4e3 stored
            # it (a1f5c7e9b3d2's backfill fills its flow run)
            "flow_run_id": None if n % 3 == 0 else runs[n % 1500]["id"],
            "task_run_id": tasks[n]["id"] if n % 3 == 0 else None,
            "message": f"line {n}",
            "timestamp": T0 + dt.timedelta(milliseconds=n),
        }
        for n in range(3000)
    ]
    engine = sync_engine(url)
    try:
        with engine.begin() as connection:
            for table, rows in zip(SEEDED_TABLES, (flows, runs, tasks, logs), strict=True):
                columns = list(rows[0])
                connection.execute(
                    sa.text(
                        f"INSERT INTO {table} ({', '.join(columns)}) "
                        f"VALUES ({', '.join(':' + c for c in columns)})"
                    ),
                    [{c: stored(row[c]) for c in columns} for row in rows],
                )
    finally:
        engine.dispose()
    return {
        table: {row["id"].hex for row in rows}
        for table, rows in zip(SEEDED_TABLES, (flows, runs, tasks, logs), strict=True)
    }


def ids_in(url: str) -> dict[str, set[str]]:
    """The ids of the seeded tables as they are now (hex strings, both dialects)."""
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table: {
                    uuid.UUID(str(value)).hex
                    for value in connection.execute(sa.text(f"SELECT id FROM {table}")).scalars()
                }
                for table in SEEDED_TABLES
            }
    finally:
        engine.dispose()


def clean_snapshots(url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str | None, Any]:
    """The schema of a clean database at every revision, base included."""
    monkeypatch.setenv("FLOWDB_DATABASE_URL", url)
    snapshots: dict[str | None, Any] = {None: schema_snapshot(url)}
    for revision in load_history().revisions:
        alembic_upgrade(revision.id)
        snapshots[revision.id] = schema_snapshot(url)
    return snapshots


def upgrade_and_kill(
    url: str,
    rng: random.Random,
    steps_pending: int,
    stratum: tuple[int, int] = (0, 1),
    interior: bool = False,
) -> int:
    """Start ``flowdb database upgrade -y`` and SIGKILL it at a random moment.

    The moment is chosen as "after the k-th reported migration, plus a random few
    milliseconds", with k uniform over the pending steps of ``stratum`` (the i-th of
    n equal parts of them; ``interior``: of 1 to ``steps_pending - 1``), so kills
    spread over the whole history (and the start-up) rather than bunching where the
    process spends most of its wall time. Returns how many migrations it reported.
    """
    part, parts = stratum
    first, count = (1, steps_pending - 1) if interior else (0, steps_pending + 1)
    low = first + part * count // parts
    high = max(low + 1, first + (part + 1) * count // parts)
    kill_after = rng.randrange(low, high)
    process = subprocess.Popen(
        [sys.executable, "-m", "flowdb", "database", "upgrade", "-y"],
        env={**os.environ, "FLOWDB_DATABASE_URL": url, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    reported = 0
    try:
        while reported < kill_after:
            line = process.stderr.readline()
            if not line:
                break  # finished (or failed) before the chosen moment
            reported += "↑" in line
        time.sleep(rng.uniform(0, 0.03))
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=120)
        process.stderr.close()
    return reported


class Databases:
    """Copies of the empty and of the seeded database, one per run, on one dialect."""

    def __init__(self, dialect: str, tmp_path: Path) -> None:
        self.dialect = dialect
        self.tmp_path = tmp_path
        self.made: list[str] = []

    def new_empty(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:///{self.tmp_path / f'db-{len(self.made)}-{uuid.uuid4().hex[:6]}.db'}"
        url = create_postgres_database()
        self.made.append(url)
        return url

    def copy_of(self, template: str) -> str:
        """A new database with the contents of ``template``."""
        if self.dialect == "sqlite":
            source = sqlite_path(template)
            assert source is not None
            target = self.tmp_path / f"copy-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(source, target)
            return f"sqlite:///{target}"
        name = f"flowdb_test_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                template_name = sa.make_url(template).database
                connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
        finally:
            admin.dispose()
        url = sa.make_url(template).set(database=name).render_as_string(hide_password=False)
        self.made.append(url)
        return url

    def drop(self, url: str) -> None:
        if self.dialect == "postgresql":
            drop_postgres_database(url)
            self.made.remove(url)

    def drop_all(self) -> None:
        for url in list(self.made):
            self.drop(url)


@pytest.fixture
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Databases]:
    made = Databases(request.param, tmp_path)
    try:
        yield made
    finally:
        made.drop_all()


class Prepared:
    """What every block of a dialect compares with, made once per test process."""

    def __init__(self, clean: dict[str | None, Any], seeded: str, seeded_ids: Any) -> None:
        self.clean, self.seeded, self.seeded_ids = clean, seeded, seeded_ids
        #: ``uninterrupted_checksums`` by the batch size it ran with.
        self.uninterrupted: dict[str | None, dict[str, str]] = {}
        #: The kind of each phase and batch event of that run (``event_kind``), in order.
        self.events: dict[str | None, list[str]] = {}


class Preparer(dict[str, Prepared]):
    """``Prepared`` per dialect, made on first use (``prepared[dialect]``)."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self.factory = factory
        self.holders: list[Databases] = []

    def __missing__(self, dialect: str) -> Prepared:
        folder = self.factory.mktemp(f"crash-{dialect}")
        holder = Databases(dialect, folder)
        self.holders.append(holder)
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setenv("FLOWDB_HOME", str(folder / "flowdb-home"))
            clean = shared_by_workers(
                self.factory,
                f"crash-clean-{dialect}",
                lambda: clean_snapshots(holder.new_empty(), monkeypatch),
            )
            seeded = holder.new_empty()
            with configured_for(seeded, monkeypatch):
                alembic_upgrade(SEEDED_AT)
        self[dialect] = Prepared(clean, seeded, seed(seeded))
        return self[dialect]


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Preparer]:
    """The clean schemas and the seeded database of each dialect, dropped at the end."""
    preparer = Preparer(tmp_path_factory)
    try:
        yield preparer
    finally:
        for holder in preparer.holders:
            holder.drop_all()


@contextmanager
def configured_for(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with monkeypatch.context() as patch:
        patch.setenv("FLOWDB_DATABASE_URL", url)
        yield


def uninterrupted_checksums(
    databases: Databases, setup: Prepared, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The data of the seeded database upgraded to head without interruption.

    Made on a copy under the item's settings, once per batch size (the only setting
    the items change) and test process.
    """
    batch_size = os.environ.get("FLOWDB_MIGRATION_BATCH_SIZE")
    if batch_size not in setup.uninterrupted:
        url = databases.copy_of(setup.seeded)
        events = EventKinds()
        logger = logging.getLogger("flowdb.migrations")
        level = logger.level
        logger.addHandler(events)
        logger.setLevel(logging.INFO)
        try:
            with configured_for(url, monkeypatch):
                alembic_upgrade()
        finally:
            logger.removeHandler(events)
            logger.setLevel(level)
        setup.uninterrupted[batch_size] = data_checksums(url)
        setup.events[batch_size] = events.kinds()
        databases.drop(url)
    return setup.uninterrupted[batch_size]


class EventKinds(logging.Handler):
    """Notes the phase and batch events of a run, the ones ``KILL_AT_EVENT`` counts."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[PhaseStarted | Progress] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if isinstance(event, PhaseStarted | Progress):
            self.events.append(event)

    def kinds(self) -> list[str]:
        return [event_kind(self.events, n) for n in range(len(self.events))]


def event_kind(events: list[PhaseStarted | Progress], n: int) -> str:
    """What the ``n``-th event (from 0) marks: a phase's start by the phase's kind (its
    first word, ``drop index`` for a dropped index), or a batch committed part way through
    a backfill (``batch``) or the backfill's last one (``last batch``)."""
    event = events[n]
    if isinstance(event, Progress):
        last = n + 1 == len(events) or not isinstance(events[n + 1], Progress)
        return "last batch" if last else "batch"
    words = event.phase.split()
    return " ".join(words[:2]) if words[0] == "drop" else words[0]


def assert_consistent_after_kill(
    url: str, revision: str | None, clean: dict[str | None, Any], where: str
) -> None:
    """The schema is the revision's, or the revision's plus the next one's finished phases."""
    history = load_history()
    part_way = in_progress(url)
    if not part_way:
        assert schema_snapshot(url) == clean[revision], f"{where}: schema differs at {revision}"
        return
    following = history.revisions[history.position(revision)].id
    assert [entry[0] for entry in part_way] == [following], f"{where}: {part_way}"


def _blocks(count: int, sample: set[int]) -> list[Any]:
    return [
        pytest.param(n, marks=() if n in sample else pytest.mark.exhaustive) for n in range(count)
    ]


@pytest.mark.parametrize("databases", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("block", _blocks(RUNS // RUNS_PER_BLOCK, RUN_SAMPLE))
def test_killed_upgrade_leaves_a_known_revision_and_loses_nothing(
    block: int,
    databases: Databases,
    prepared: Preparer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history = load_history()
    rng = random.Random(f"{databases.dialect}-{block}")
    setup = prepared[databases.dialect]
    clean, seeded, seeded_ids = setup.clean, setup.seeded, setup.seeded_ids
    uninterrupted = uninterrupted_checksums(databases, setup, monkeypatch)

    known = {item.id for item in history.revisions}
    landed: list[str | None] = []
    for run in range(block * RUNS_PER_BLOCK, (block + 1) * RUNS_PER_BLOCK):
        from_base = run % 3 == 0
        url = databases.new_empty() if from_base else databases.copy_of(seeded)
        start = None if from_base else SEEDED_AT
        pending = len(history.revisions) - history.position(start)
        same_start = [r for r in range(block * RUNS_PER_BLOCK, run) if (r % 3 == 0) == from_base]
        per_start = sum(
            (r % 3 == 0) == from_base
            for r in range(block * RUNS_PER_BLOCK, (block + 1) * RUNS_PER_BLOCK)
        )
        upgrade_and_kill(url, rng, pending, (len(same_start), per_start), not from_base)

        revision = revision_of(url)
        landed.append(revision)
        assert revision is None or revision in known, f"run {run}: unknown {revision}"
        assert history.position(revision) >= history.position(start), f"run {run}: went back"
        assert_consistent_after_kill(url, revision, clean, f"run {run}")
        if not from_base:
            assert ids_in(url) == seeded_ids, f"run {run}: seeded rows changed by the kill"
        with configured_for(url, monkeypatch):
            alembic_upgrade()
        assert revision_of(url) == history.head
        assert schema_snapshot(url) == clean[history.head], f"run {run}: head schema differs"
        if not from_base:
            assert ids_in(url) == seeded_ids, f"run {run}: seeded rows changed by the resume"
            assert data_checksums(url) == uninterrupted, f"run {run}: data differs after resume"
        databases.drop(url)

    # The kills must have landed all over the history, not only before or after it.
    assert len(set(landed) - {None, SEEDED_AT, history.head}) >= 3, landed


#: Boot code for a child that SIGKILLs itself at the N-th phase or batch event.
KILL_AT_EVENT = """
import logging, os, signal, sys
from flowdb.database.events import PhaseStarted, Progress

class KillAt(logging.Handler):
    seen = 0
    def emit(self, record):
        if isinstance(getattr(record, "event", None), (PhaseStarted, Progress)):
            KillAt.seen += 1
            if KillAt.seen == int(os.environ["KILL_AT_EVENT"]):
                os.kill(os.getpid(), signal.SIGKILL)

logger = logging.getLogger("flowdb.migrations")
logger.addHandler(KillAt())
logger.setLevel(logging.INFO)
import dataclasses
from flowdb.database.dialects.sqlite import SqliteDialect
SqliteDialect.features = dataclasses.replace(SqliteDialect.features, batch_pause=0.0)
from flowdb.database.alembic_commands import alembic_upgrade
alembic_upgrade()
"""


def killed_at_event(
    databases: Databases, setup: Prepared, event: int, monkeypatch: pytest.MonkeyPatch
) -> bool:
    """Kill an upgrade of a copy of the seeded database at its ``event``-th phase or batch
    event, check what the kill left, resume, and compare with the uninterrupted upgrade.

    Returns False when the upgrade has fewer events (it then ends unkilled).
    """
    history = load_history()
    uninterrupted = uninterrupted_checksums(databases, setup, monkeypatch)
    url = databases.copy_of(setup.seeded)
    env = {**os.environ, "FLOWDB_DATABASE_URL": url, "KILL_AT_EVENT": str(event)}
    # A real process, really SIGKILLed, forked from a helper that has imported flowdb.
    child = forkserver.run(["-c", KILL_AT_EVENT], env=env, text=False)
    if child.returncode == 0:  # fewer events than that: every point was covered
        databases.drop(url)
        return False
    assert child.returncode == -signal.SIGKILL, child.stderr
    revision = revision_of(url)
    assert_consistent_after_kill(url, revision, setup.clean, f"event {event}")
    assert ids_in(url) == setup.seeded_ids, f"event {event}: seeded rows changed by the kill"
    with configured_for(url, monkeypatch):
        alembic_upgrade()
    assert revision_of(url) == history.head
    assert in_progress(url) == ()
    assert schema_snapshot(url) == setup.clean[history.head], f"event {event}: schema differs"
    assert data_checksums(url) == uninterrupted, f"event {event}: data differs"
    databases.drop(url)
    return True


@pytest.mark.parametrize("databases", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("block", _blocks(EVENT_BLOCKS, EVENT_SAMPLE))
def test_a_kill_in_every_phase_and_after_every_batch_resumes_to_the_same_result(
    block: int,
    databases: Databases,
    prepared: Preparer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOWDB_MIGRATION_BATCH_SIZE", "600")  # 1,500 runs: three batches
    setup = prepared[databases.dialect]

    last_block = block == EVENT_BLOCKS - 1
    found_end = False
    events = block * EVENTS_PER_BLOCK
    while last_block or events < (block + 1) * EVENTS_PER_BLOCK:
        events += 1
        if not killed_at_event(databases, setup, events, monkeypatch):
            assert block >= TAIL_BLOCK, f"only {events - 1} events: fewer than the blocks expect"
            found_end = True
            break
    if found_end:
        assert events > 20, f"only {events - 1} phase and batch events were found"


@pytest.mark.parametrize(
    ("databases", "kind"),
    [
        pytest.param(dialect, kind, id=f"{dialect}-{kind.replace(' ', '-')}")
        for dialect, kinds in EVENT_KINDS.items()
        for kind in [*kinds, "end"]
    ],
    indirect=["databases"],
)
def test_a_kill_at_the_first_event_of_each_kind_resumes_to_the_same_result(
    kind: str,
    databases: Databases,
    prepared: Preparer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CI's sample of the event kills: the first event of ``kind``; ``end``: the last
    event, then one past it (the run ends unkilled), and the kinds are all sampled."""
    monkeypatch.setenv("FLOWDB_MIGRATION_BATCH_SIZE", "600")  # 1,500 runs: three batches
    setup = prepared[databases.dialect]
    uninterrupted_checksums(databases, setup, monkeypatch)
    kinds = setup.events["600"]
    if kind != "end":
        assert kind in kinds, f"no {kind} event in {kinds}: update EVENT_KINDS"
        assert killed_at_event(databases, setup, kinds.index(kind) + 1, monkeypatch)
        return
    assert sorted(set(kinds)) == sorted(EVENT_KINDS[databases.dialect]), "update EVENT_KINDS"
    assert len(kinds) > 20, f"only {len(kinds)} phase and batch events were found"
    assert killed_at_event(databases, setup, len(kinds), monkeypatch)
    assert not killed_at_event(databases, setup, len(kinds) + 1, monkeypatch)

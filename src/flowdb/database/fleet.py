"""Who serves the database: the replicas' heartbeats, and the stop before a contract.

A rolling upgrade runs two releases at once for a while: the replicas of the previous
release keep serving while those of the new one start. Each revision has a phase
(``history.Revision.phase``): *expand* revisions keep the previous release working,
*contract* revisions remove what only it needed. So an upgrade may apply every expand
revision at once, but a contract revision only once no replica of an older release
still serves.

Each API server replica records a heartbeat in ``flowdb_replica`` (``bookkeeping``):
its release, the head revision its code serves, since when, when last seen, its host
and pid (``beat``, every ``FLOWDB_SERVER_HEARTBEAT_INTERVAL`` seconds; ``leave`` on a
clean shutdown). A row not seen for ``FLOWDB_SERVER_HEARTBEAT_STALE`` seconds is a
replica that died. A replica is *older* than a contract revision when the head it serves
comes before that revision in this history (a newer head, unknown here, is not older).

Releases from before the heartbeat write none. On PostgreSQL their server sessions
carry ``application_name = 'flowdb-server'`` (this release's carry
``flowdb-server+heartbeat``, ``dialects.postgresql.SERVER_APPLICATION_NAME``), so such
sessions count as older replicas, one per client address
(``Dialect.untracked_server_sessions``).

``hold_contracts`` cuts an upgrade's plan before its first contract revision while
older replicas serve; the caller says so in one sentence (``Plan.held``).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from flowdb import __version__
from flowdb.database.bookkeeping import CREATE_REPLICAS, REPLICA_TABLE

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from flowdb.database.history import History
    from flowdb.database.planning import Plan
    from flowdb.database.target import Database

#: The flag of ``upgrade`` that runs contract revisions although older replicas serve.
CONTRACT_NOW_FLAG = "--contract-now"
#: What older releases' server sessions are called on PostgreSQL (they write no heartbeat).
OLDER_APPLICATION_NAME = "flowdb-server"


@dataclass(frozen=True)
class Replica:
    """One replica's heartbeat row."""

    id: str
    flowdb_version: str
    head_revision: str | None
    host: str
    pid: int
    since: str
    last_seen: str

    def describe(self) -> str:
        """``host:pid, release 0.1.0, head 7b5e9c2f4d3a``."""
        return (
            f"{self.host}:{self.pid}, release {self.flowdb_version}, "
            f"head {self.head_revision or 'base'}"
        )


@dataclass(frozen=True)
class Fleet:
    """The replicas alive now, and the older-release sessions that have no heartbeat."""

    replicas: tuple[Replica, ...] = ()
    #: Client addresses of older-release server sessions (PostgreSQL), one per replica.
    untracked: tuple[str, ...] = ()

    def older_than(self, history: History, revision: str) -> list[str]:
        """Who still needs what ``revision`` (a contract) removes: one description each."""
        position = history.position(revision)
        older = [
            r.describe()
            for r in self.replicas
            if r.head_revision is None
            or (history.knows(r.head_revision) and history.position(r.head_revision) < position)
        ]
        return older + [f"a release without heartbeat at {a}" for a in self.untracked]


def new_replica(head: str | None) -> Replica:
    """This process as a replica serving ``head``; its id is unique across hosts and restarts."""
    host = socket.gethostname()[:200]
    pid = os.getpid()
    now = _now()
    return Replica(
        id=f"{host[:40]}:{pid}:{uuid.uuid4().hex[:12]}",
        flowdb_version=__version__,
        head_revision=head,
        host=host,
        pid=pid,
        since=now,
        last_seen=now,
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def beat(database: Database, replica: Replica) -> Replica:
    """Write ``replica``'s heartbeat (insert or refresh its row); returns it as written.

    Creates the table when an older flowdb's bookkeeping lacks it (``CREATE TABLE IF
    NOT EXISTS``, the same statement as bookkeeping step 3; additive, so harmless to
    any release).
    """
    import sqlalchemy as sa

    seen = replace(replica, last_seen=_now())
    values = {
        "id": seen.id,
        "flowdb_version": seen.flowdb_version,
        "head_revision": seen.head_revision,
        "host": seen.host,
        "pid": seen.pid,
        "since": seen.since,
        "last_seen": seen.last_seen,
    }
    engine = database.engine("flowdb-heartbeat")
    try:
        with database.errors(), engine.begin() as connection:
            if not sa.inspect(connection).has_table(REPLICA_TABLE):
                connection.exec_driver_sql(CREATE_REPLICAS)
            updated = connection.execute(
                sa.text(
                    f"UPDATE {REPLICA_TABLE} SET last_seen = :last_seen, "
                    "head_revision = :head_revision WHERE id = :id"
                ),
                values,
            )
            if updated.rowcount == 0:
                columns = ", ".join(values)
                marks = ", ".join(f":{name}" for name in values)
                connection.execute(
                    sa.text(f"INSERT INTO {REPLICA_TABLE} ({columns}) VALUES ({marks})"), values
                )
    finally:
        engine.dispose()
    return seen


def leave(database: Database, replica: Replica) -> None:
    """Remove ``replica``'s row (a clean shutdown: it no longer serves)."""
    import sqlalchemy as sa

    engine = database.engine("flowdb-heartbeat")
    try:
        with database.errors(), engine.begin() as connection:
            if sa.inspect(connection).has_table(REPLICA_TABLE):
                connection.execute(
                    sa.text(f"DELETE FROM {REPLICA_TABLE} WHERE id = :id"), {"id": replica.id}
                )
    finally:
        engine.dispose()


def read_replicas(connection: Connection, stale_after: float) -> tuple[Replica, ...]:
    """The replicas seen within ``stale_after`` seconds, oldest first. Reads only."""
    import sqlalchemy as sa

    if not sa.inspect(connection).has_table(REPLICA_TABLE):
        return ()
    rows = connection.execute(
        sa.text(
            "SELECT id, flowdb_version, head_revision, host, pid, since, last_seen "
            f"FROM {REPLICA_TABLE} ORDER BY since, id"
        )
    ).all()
    return _alive([Replica(*row) for row in rows], stale_after)


def _alive(found: list[Replica], stale_after: float) -> tuple[Replica, ...]:
    """The replicas of ``found`` seen within ``stale_after`` seconds."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=stale_after)
    return tuple(r for r in found if _parse(r.last_seen) >= cutoff)


def serving(database: Database, tables: frozenset[str] | None = None) -> Fleet:
    """The replicas alive now and the older-release sessions without heartbeat. Reads only.

    With the database's ``tables`` known (a status read), SQLite reads the heartbeat
    rows with ``sqlite3`` (``Dialect.read_rows``), so ``current`` imports no SQLAlchemy.
    """
    if tables is not None:
        if REPLICA_TABLE not in tables:
            return Fleet()
        rows = database.dialect.read_rows(REPLICA_TABLE)
        if rows is not None:  # (no untracked sessions: only PostgreSQL names them)
            fields = Replica.__dataclass_fields__
            found = [Replica(**{k: v for k, v in row.items() if k in fields}) for row in rows]
            found.sort(key=lambda r: (r.since, r.id))
            return Fleet(_alive(found, database.settings.server_heartbeat_stale))
    engine = database.engine("flowdb-status")
    try:
        with database.errors(), engine.connect() as connection:
            replicas = read_replicas(connection, database.settings.server_heartbeat_stale)
            untracked = database.dialect.untracked_server_sessions(
                connection, OLDER_APPLICATION_NAME
            )
            connection.rollback()
    finally:
        engine.dispose()
    return Fleet(replicas, tuple(untracked))


def hold_contracts(database: Database, plan: Plan) -> Plan:
    """``plan`` cut before its first contract revision while older replicas still serve.

    The plan returned carries ``held``, one sentence naming the contract, the replicas it
    waits for and what to do; an unchanged plan has ``held == ""``. An upgrade from an
    empty database is never held (nothing can serve it yet).
    """
    from flowdb.database.planning import Plan

    if plan.direction != "upgrade" or plan.current is None:
        return plan
    index = database.history.first_contract(plan.steps)
    if index is None:
        return plan
    contract = plan.steps[index]
    older = serving(database).older_than(database.history, contract.id)
    if not older:
        return plan
    applied = plan.steps[:index]
    count = len(older)
    held = (
        f"Stopped before contract {contract.id}: {count} "
        f"replica{'s' if count != 1 else ''} of an older release still "
        f"serve{'s' if count == 1 else ''} ({'; '.join(older[:3])}{'; ...' if count > 3 else ''}); "
        "run the upgrade again once they are gone, or with "
        f"{CONTRACT_NOW_FLAG} to run it now (they break)."
    )
    target = applied[-1].id if applied else plan.current
    return Plan("upgrade", plan.current, target, applied, held=held)


def pending_contracts(database: Database, current: str | None) -> list[str]:
    """The revisions an upgrade to head still has to apply, when the next one is a contract.

    That is where an upgrade with ``hold_contracts`` stops: every expand before the first
    contract applied. Expands after it (a history with more than one round of expand and
    contract) wait with it; readiness still requires every column the code uses. Empty
    when the database is at head, or when an expand revision is next.
    """
    history = database.history
    if current is not None and not history.knows(current):
        return []
    pending = history.pending(current)
    if current is None or not pending or pending[0].phase != "contract":
        return []
    return [r.id for r in pending]


def held_contract(database: Database, current: str | None) -> str | None:
    """The contract an upgrade with ``hold_contracts`` stops before, if it is next.

    The first pending revision when it is a contract; expands may follow it (a database
    more than one release behind), and the upgrade that runs it goes on through them.
    """
    history = database.history
    if current is None or not history.knows(current):
        return None
    pending = history.pending(current)
    return pending[0].id if pending and pending[0].phase == "contract" else None

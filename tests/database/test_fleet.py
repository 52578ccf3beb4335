"""Expand and contract: phases, replicas' heartbeats, and the upgrade that waits for them.

Real databases (every dialect through ``database_url``). The case: the previous
release serves 7b5e9c2f4d3a; this one adds 8d2e4f6a1c35 (expand: flow_run.ended_at
beside end_time, kept in step by triggers) and 9e3f5a7b2d46 (contract: drops end_time).
While a replica of the previous release serves, the upgrade stops before the contract.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pytest
import sqlalchemy as sa

from flowdb.database import bookkeeping, fleet
from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.database.history import load_history
from flowdb.database.target import Database
from flowdb.server.heartbeat import run_waiting_contracts
from tests.cli.helpers import flowdb, ok
from tests.dbtools import revision_of, sync_engine

OLD_HEAD = "7b5e9c2f4d3a"
EXPAND = "8d2e4f6a1c35"
CONTRACT = "9e3f5a7b2d46"


def older_replica(url: str, *, seen_seconds_ago: float = 0.0) -> fleet.Replica:
    """A heartbeat row of a replica serving ``OLD_HEAD``, written by ``fleet.beat``."""
    replica = dataclasses.replace(fleet.new_replica(OLD_HEAD), host="old-host", pid=4242)
    written = fleet.beat(Database.from_url(url), replica)
    if seen_seconds_ago:
        then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seen_seconds_ago)
        with sync_engine(url).begin() as connection:
            connection.execute(
                sa.text(f"UPDATE {bookkeeping.REPLICA_TABLE} SET last_seen = :t WHERE id = :id"),
                {"t": then.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "id": written.id},
            )
    return written


def upgrade_runs(url: str, revision: str) -> int:
    """How many times ``revision`` was applied by an upgrade (the run record)."""
    with sync_engine(url).connect() as connection:
        return int(
            connection.execute(
                sa.text(
                    f"SELECT count(*) FROM {bookkeeping.RUN_TABLE} WHERE revision = :r "
                    "AND direction = 'upgrade' AND success = :yes"
                ),
                {"r": revision, "yes": True},
            ).scalar_one()
        )


def test_released_revisions_derive_their_phase_and_new_ones_declare_it() -> None:
    history = load_history()
    released = history.revisions[: history.position(OLD_HEAD)]
    for revision in released:
        assert revision.declared_phase is None
        expected = "expand" if revision.serves_previous_code else "contract"
        assert revision.phase == expected, revision.id
    assert [r.phase for r in released].count("expand") == 8  # and 6 contracts
    assert history.get(EXPAND).declared_phase == "expand"
    assert history.get(CONTRACT).declared_phase == "contract"
    # Two expands (8c6f0a3e5b41, EXPAND) come before the contract.
    assert history.first_contract(history.pending(OLD_HEAD)) == 2


def test_upgrade_stops_before_the_contract_while_an_older_replica_serves(configured: str) -> None:
    alembic_upgrade(OLD_HEAD)
    replica = older_replica(configured)

    result = ok(flowdb(configured, "database", "upgrade", "-y"))
    assert revision_of(configured) == EXPAND  # the expand ran, the contract waits
    assert (
        f"Stopped before contract {CONTRACT}: 1 replica of an older release still serves "
        "(old-host:4242, release" in " ".join(result.stderr.split())
    )
    assert "--contract-now" in result.stderr

    again = ok(flowdb(configured, "database", "upgrade", "-y"))  # still there: still waits
    assert f"Stopped before contract {CONTRACT}" in " ".join(again.stderr.split())
    assert revision_of(configured) == EXPAND

    current = ok(flowdb(configured, "database", "current", "--json"))
    import json

    shown = json.loads(current.stdout)
    assert shown["pending_contract"] == CONTRACT
    assert [r["id"] for r in shown["replicas"]] == [replica.id]
    assert shown["contract_waits_for"] == [replica.describe()]

    fleet.leave(Database.from_url(configured), replica)  # it stopped cleanly
    ok(flowdb(configured, "database", "upgrade", "-y"))
    assert revision_of(configured) == load_history().head


def test_a_stale_heartbeat_does_not_hold_the_contract(configured: str) -> None:
    alembic_upgrade(OLD_HEAD)
    older_replica(configured, seen_seconds_ago=31)  # the default stale limit is 30 s
    result = ok(flowdb(configured, "database", "upgrade", "-y"))
    assert "Stopped before" not in result.stderr
    assert revision_of(configured) == load_history().head


def test_contract_now_runs_the_contract_despite_older_replicas(configured: str) -> None:
    alembic_upgrade(OLD_HEAD)
    older_replica(configured)
    ok(flowdb(configured, "database", "upgrade", "-y", "--contract-now"))
    assert revision_of(configured) == load_history().head


def test_a_replica_of_this_release_does_not_hold_the_contract(configured: str) -> None:
    alembic_upgrade(OLD_HEAD)
    fleet.beat(Database.from_url(configured), fleet.new_replica(load_history().head))
    ok(flowdb(configured, "database", "upgrade", "-y"))
    assert revision_of(configured) == load_history().head


def test_the_waiting_contract_runs_once_when_several_new_replicas_try(configured: str) -> None:
    alembic_upgrade(OLD_HEAD)
    replica = older_replica(configured)
    database = Database.from_url(configured)
    alembic_upgrade(EXPAND)
    assert run_waiting_contracts(database) is False  # the older replica still serves
    assert revision_of(configured) == EXPAND

    fleet.leave(database, replica)
    ran: list[bool] = []
    lock = threading.Lock()

    def try_it() -> None:
        outcome = run_waiting_contracts(Database.from_url(configured))
        with lock:
            ran.append(outcome)

    threads = [threading.Thread(target=try_it) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert revision_of(configured) == load_history().head
    assert sorted(ran) == [False, False, True]
    assert upgrade_runs(configured, CONTRACT) == 1


def test_bookkeeping_step_3_adds_the_replica_table_to_an_older_shape(configured: str) -> None:
    alembic_upgrade(OLD_HEAD)
    with sync_engine(configured).begin() as connection:
        connection.exec_driver_sql(f"DROP TABLE {bookkeeping.REPLICA_TABLE}")
        connection.exec_driver_sql(f"UPDATE {bookkeeping.VERSION_TABLE} SET version = 2")
    ok(flowdb(configured, "database", "upgrade", "-y", "-r", EXPAND))
    with sync_engine(configured).connect() as connection:
        assert sa.inspect(connection).has_table(bookkeeping.REPLICA_TABLE)
        assert bookkeeping.read_version(connection) == bookkeeping.LATEST == 3


def test_postgres_sessions_of_an_older_server_count_as_older_replicas(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWDB_DATABASE_URL", postgres_url)
    alembic_upgrade(OLD_HEAD)
    import psycopg

    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, application_name="flowdb-server") as older_server:
        older_server.execute("SELECT 1")
        result = ok(flowdb(postgres_url, "database", "upgrade", "-y"))
        assert revision_of(postgres_url) == EXPAND
        assert "a release without heartbeat at" in " ".join(result.stderr.split())
    ok(flowdb(postgres_url, "database", "upgrade", "-y"))
    assert revision_of(postgres_url) == load_history().head


def test_history_shows_each_phase_and_current_the_waiting_contract(sqlite_url: str) -> None:
    import json

    from flowdb.database.commands import migrate

    migrate(Database.from_url(sqlite_url), "upgrade", EXPAND)
    replica = older_replica(sqlite_url)
    listed = json.loads(ok(flowdb(sqlite_url, "database", "history", "--json")).stdout)
    phases = {item["revision"]: item["phase"] for item in listed}
    assert (phases[OLD_HEAD], phases[EXPAND], phases[CONTRACT]) == (
        "contract",
        "expand",
        "contract",
    )
    shown = " ".join(ok(flowdb(sqlite_url, "database", "current")).stdout.split())
    assert f"Replica: {replica.describe()}" in shown
    assert f"Pending contract: {CONTRACT}, waits for 1 replica(s) of an older release" in shown

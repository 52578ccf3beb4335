"""What ``current`` and ``history`` say about the fleet: replicas and the pending contract.

Kept apart from ``cli/database.py`` so the commands stay short; reads only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowdb.database.fleet import Fleet
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database


def _read(database: Database, status: SchemaStatus) -> tuple[Fleet, str | None, list[str]]:
    """The fleet, the first pending contract revision and who it waits for."""
    from flowdb.database.fleet import Fleet, serving

    if not status.known or status.current is None:
        return Fleet(), None, []  # (an empty or missing database: nothing serves it yet)
    fleet = serving(database, status.tables)
    history = database.history
    pending = history.pending(status.current) if status.current is not None else ()
    index = history.first_contract(pending)
    contract = pending[index].id if index is not None else None
    waits = fleet.older_than(history, contract) if contract is not None else []
    return fleet, contract, waits


def fleet_json(database: Database, status: SchemaStatus) -> dict[str, Any]:
    """``replicas`` (alive), ``untracked_servers``, ``pending_contract``, ``contract_waits_for``."""
    fleet, contract, waits = _read(database, status)
    return {
        "replicas": [
            {
                "id": r.id,
                "flowdb_version": r.flowdb_version,
                "head_revision": r.head_revision,
                "host": r.host,
                "pid": r.pid,
                "since": r.since,
                "last_seen": r.last_seen,
            }
            for r in fleet.replicas
        ],
        "untracked_servers": list(fleet.untracked),
        "pending_contract": contract,
        "contract_waits_for": waits,
    }


def fleet_lines(database: Database, status: SchemaStatus) -> list[str]:
    """Lines for people: each replica alive, and the pending contract with who it waits for."""
    fleet, contract, waits = _read(database, status)
    lines = [f"Replica: {r.describe()}, since {_when(r.since)}" for r in fleet.replicas]
    lines += [f"Replica: a release without heartbeat at {a}" for a in fleet.untracked]
    if contract is not None and waits:
        lines.append(
            f"Pending contract: {contract}, waits for {len(waits)} replica(s) of an older "
            "release (upgrade runs it once they are gone, or with --contract-now)"
        )
    elif contract is not None:
        lines.append(f"Pending contract: {contract} (no older replica serves; upgrade runs it)")
    return lines


def _when(stamp: str) -> str:
    """``2026-12-06T22:10:00.123456Z`` -> ``2026-12-06 22:10:00 UTC``."""
    return stamp[:19].replace("T", " ") + " UTC"

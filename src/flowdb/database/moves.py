"""What a downgrade carries back instead of destroying: data moved into another column or table.

A downgrade's plan lists each table and column it drops (``impact``). Some of those
drops lose nothing, or lose only part: the revision's ``downgrade()`` first copies
the data back where the older schema keeps it. Released revision files never change,
so what each one moves back is declared here, next to SQL that counts it in the
database as it is now; ``impact`` subtracts it from the loss and says where it goes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Move:
    """Data a revision's downgrade copies back before it drops ``table`` (or its ``column``)."""

    into: str
    #: Which part moves, in words ("each deployment's oldest").
    which: str
    #: SQL counting the rows (or values) that move; ``None``: all of them.
    count_sql: str | None = None


#: ``(revision, table, column or None)`` -> what its downgrade moves back.
MOVES: dict[tuple[str, str, str | None], Move] = {
    ("4e2b6f8c1a97", "task_run", "dynamic_key"): Move(
        into="task_run.task_key", which="joined back as '<key>:<dynamic key>'"
    ),
    ("5f3c7a9d2b18", "flow_run_state", None): Move(
        into="flow_run",
        which="each run's current state (its message into flow_run.state_message)",
        count_sql=(
            "SELECT count(*) FROM flow_run_state s WHERE EXISTS "
            "(SELECT 1 FROM flow_run r WHERE r.state_id = s.id)"
        ),
    ),
    ("5f3c7a9d2b18", "flow_run", "state_id"): Move(
        into="flow_run", which="links to each run's current state, which stays on the run"
    ),
    ("7b5e9c2f4d3a", "deployment_schedule", None): Move(
        into="deployment.schedule",
        which="each deployment's oldest schedule",
        count_sql="SELECT count(DISTINCT deployment_id) FROM deployment_schedule",
    ),
    ("8d2e4f6a1c35", "flow_run", "ended_at"): Move(
        into="flow_run.end_time", which="kept equal to end_time by the revision's triggers"
    ),
}


def move_of(revision: str, table: str, column: str | None) -> Move | None:
    """What ``revision``'s downgrade moves back from ``table`` (``column``), if anything."""
    return MOVES.get((revision, table, column))

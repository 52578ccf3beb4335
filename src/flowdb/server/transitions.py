"""Which state may follow which: the one place the transition rules live.

The same rules hold for flow runs and task runs. A run without a state may enter any
state. ``force`` (for operators) skips the rules, never the invariants the database
keeps (counters, times, the order of the history). README.md shows this table; a
test keeps the two in step.
"""

from __future__ import annotations

from flowdb.database.column_types import StateType
from flowdb.errors import StateTransitionError

S = StateType

#: States that end a run: entering one sets its end time.
TERMINAL = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.CRASHED})

#: For each current state, the states a run may move to from it.
ALLOWED: dict[StateType, frozenset[StateType]] = {
    S.SCHEDULED: frozenset(
        {
            S.SCHEDULED,
            S.PENDING,
            S.RUNNING,
            S.PAUSED,
            S.CANCELLING,
            S.CANCELLED,
            S.FAILED,
            S.CRASHED,
        }
    ),
    S.PENDING: frozenset(
        {S.SCHEDULED, S.RUNNING, S.PAUSED, S.CANCELLING, S.CANCELLED, S.FAILED, S.CRASHED}
    ),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CRASHED, S.PAUSED, S.CANCELLING, S.CANCELLED}),
    S.PAUSED: frozenset(
        {S.SCHEDULED, S.PENDING, S.RUNNING, S.CANCELLING, S.CANCELLED, S.FAILED, S.CRASHED}
    ),
    S.CANCELLING: frozenset({S.CANCELLED, S.COMPLETED, S.FAILED, S.CRASHED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset({S.SCHEDULED}),
    S.CRASHED: frozenset({S.SCHEDULED}),
    S.CANCELLED: frozenset({S.SCHEDULED}),
}


def check_transition(
    kind: str, run_id: object, current: StateType | None, requested: StateType
) -> None:
    """Raise ``StateTransitionError`` (a 409) when ``current`` may not be followed by ``requested``.

    The message names both states and what the current one allows, so a client can
    tell a lost race (another call moved the run first) from a wrong request.
    """
    if current is None or requested in ALLOWED[current]:
        return
    allowed = ", ".join(sorted(ALLOWED[current])) or "none (a final state)"
    raise StateTransitionError(
        f"The {kind} {run_id} is {current.value}; it cannot move to {requested.value} "
        f"(allowed from {current.value}: {allowed}). Send force=true to override."
    )


def readme_table() -> str:
    """The rules as the Markdown table README.md shows (rows: from, columns: to)."""
    states = list(StateType)
    header = "| from \\ to | " + " | ".join(state.value for state in states) + " |"
    lines = [header, "| --- |" + " :---: |" * len(states)]
    for current in states:
        marks = ["✓" if state in ALLOWED[current] else "" for state in states]
        lines.append(f"| {current.value} | " + " | ".join(marks) + " |")
    return "\n".join(lines)

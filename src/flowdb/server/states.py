"""Entering a state, serialised per run, for flow runs and task runs alike.

One state change is one transaction that:

1. locks the run's row (``SELECT ... FOR NO KEY UPDATE`` on PostgreSQL, which leaves
   inserts that merely reference the run, such as logs, unblocked; on SQLite the write
   transaction, begun IMMEDIATE, already holds the database's write lock) before reading
   its state, so concurrent changes of one run queue instead of overwriting each other;
2. checks the transition rules (``transitions``) against that current state;
3. stamps the state with the server's time, taken under the lock, and never earlier
   than the run's latest state (one microsecond later when the clock has not moved on),
   so the history's time order is the order the changes committed in;
4. updates the run with expressions the database computes (``run_count + 1``,
   ``coalesce(start_time, ...)``), never with values read earlier in Python.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from flowdb.database import orm_models as orm
from flowdb.database.column_types import StateType, Timestamp, utcnow
from flowdb.server.schemas import State, StateCreate
from flowdb.server.transitions import TERMINAL, check_transition

TICK = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class RunKind:
    """Where one kind of run keeps its row and its history."""

    label: str
    run: type[orm.FlowRun] | type[orm.TaskRun]
    state: type[orm.FlowRunState] | type[orm.TaskRunState]
    state_run_id: Any  # the history's column that points at the run
    has_state_timestamp: bool


FLOW_RUN = RunKind("flow run", orm.FlowRun, orm.FlowRunState, orm.FlowRunState.flow_run_id, True)
TASK_RUN = RunKind("task run", orm.TaskRun, orm.TaskRunState, orm.TaskRunState.task_run_id, False)


class RunNotFound(LookupError):
    """The run to change does not exist (the route answers 404)."""


async def enter_state(
    session: AsyncSession, kind: RunKind, run_id: uuid.UUID, body: StateCreate, *, force: bool
) -> State:
    """Move the run ``run_id`` to the state ``body``; return the new history entry.

    Raises ``RunNotFound`` for an unknown run and ``StateTransitionError`` for a change
    the rules refuse (unless ``force``).
    """
    run = kind.run
    current = (
        await session.execute(
            sa.select(run.state_type).where(run.id == run_id).with_for_update(key_share=True)
        )
    ).one_or_none()
    if current is None:
        raise RunNotFound(run_id)
    if not force:
        check_transition(kind.label, run_id, current.state_type, body.type)
    latest = await session.scalar(
        sa.select(sa.func.max(kind.state.timestamp)).where(kind.state_run_id == run_id)
    )
    timestamp = utcnow() if latest is None else max(utcnow(), latest + TICK)
    state = kind.state(
        id=uuid.uuid4(),
        type=body.type,
        name=body.name or body.type.value.capitalize(),
        timestamp=timestamp,
        message=body.message,
        data=body.data,
    )
    setattr(state, kind.state_run_id.key, run_id)
    session.add(state)
    await session.flush()  # the state row must exist before the run refers to it
    values: dict[str, Any] = {
        "state_id": state.id,
        "state_type": state.type,
        "state_name": state.name,
        "updated": timestamp,
    }
    if kind.has_state_timestamp:
        values["state_timestamp"] = timestamp
    if body.type == StateType.RUNNING:
        values["run_count"] = run.run_count + 1
        values["start_time"] = sa.func.coalesce(
            run.start_time, sa.bindparam(None, timestamp, type_=Timestamp)
        )
    if body.type in TERMINAL:
        values["end_time"] = timestamp
    await session.execute(
        sa.update(run).where(run.id == run_id).values(values),
        execution_options={"synchronize_session": False},
    )
    return State.model_validate(state)


async def state_history(
    session: AsyncSession, kind: RunKind, run_id: uuid.UUID, *, limit: int, offset: int
) -> list[State]:
    """The states the run ``run_id`` went through, oldest first (one page of them).

    Raises ``RunNotFound`` for an unknown run.
    """
    if await session.get(kind.run, run_id) is None:
        raise RunNotFound(run_id)
    states = await session.scalars(
        sa.select(kind.state)
        .where(kind.state_run_id == run_id)
        .order_by(kind.state.timestamp, kind.state.id)
        .limit(limit)
        .offset(offset)
    )
    return [State.model_validate(state) for state in states]

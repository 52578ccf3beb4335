"""Flow runs: create, read, list, and move through states (with their history)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from flowdb.database import orm_models as orm
from flowdb.database.column_types import StateType
from flowdb.server.routes.common import (
    BAD_BODY,
    NOT_FOUND,
    REFUSED_TRANSITION,
    Database,
    Paging,
    not_found,
)
from flowdb.server.schemas import FlowRun, FlowRunCreate, State, StateChange, Timestamp
from flowdb.server.states import FLOW_RUN, RunNotFound, enter_state, state_history

router = APIRouter(prefix="/flow_runs", tags=["flow runs"])


@router.post(
    "",
    status_code=201,
    responses={
        **NOT_FOUND,
        **BAD_BODY,
        200: {"model": FlowRun, "description": "The idempotency key was used: the existing run."},
    },
)
async def create_flow_run(body: FlowRunCreate, database: Database, response: Response) -> FlowRun:
    """Create a run of a flow, optionally in an initial state.

    With an ``idempotency_key`` this flow already used, nothing is created and the
    existing run is returned with status 200, so a client may safely retry.
    """
    async with database.session(write=True) as session:
        if await session.get(orm.Flow, body.flow_id) is None:
            raise not_found("flow", body.flow_id)
        existing = await _run_with_idempotency_key(session, body)
        if existing is not None:
            response.status_code = 200
            return FlowRun.model_validate(existing)
        run_id = uuid.uuid4()
        run = orm.FlowRun(
            id=run_id,
            flow_id=body.flow_id,
            name=body.name or f"run-{run_id.hex[:8]}",
            parameters=body.parameters,
            tags=body.tags,
            idempotency_key=body.idempotency_key,
            expected_start_time=body.expected_start_time or dt.datetime.now(dt.UTC),
            run_count=0,
        )
        try:
            async with session.begin_nested():
                session.add(run)
        except IntegrityError:
            # Another request with the same idempotency key committed first (possible
            # where writers do not queue): that run is the answer. A locking read, since
            # MariaDB's REPEATABLE READ would answer from the snapshot taken before it.
            existing = await _run_with_idempotency_key(session, body, newest=True)
            if existing is None:
                raise
            response.status_code = 200
            return FlowRun.model_validate(existing)
        if body.state is not None:
            await enter_state(session, FLOW_RUN, run_id, body.state, force=True)
            await session.refresh(run)
        return FlowRun.model_validate(run)


async def _run_with_idempotency_key(
    session: AsyncSession, body: FlowRunCreate, *, newest: bool = False
) -> orm.FlowRun | None:
    """The flow's run created earlier with ``body``'s idempotency key, if any.

    ``newest``: read the latest committed row (a shared-lock read), not the
    transaction's snapshot, to find a run another transaction committed meanwhile.
    """
    if body.idempotency_key is None:
        return None
    query = select(orm.FlowRun).where(
        orm.FlowRun.flow_id == body.flow_id,
        orm.FlowRun.idempotency_key == body.idempotency_key,
    )
    if newest:
        query = query.with_for_update(read=True)
    run: orm.FlowRun | None = await session.scalar(query)
    return run


@router.get("/{flow_run_id}", responses=NOT_FOUND)
async def read_flow_run(flow_run_id: uuid.UUID, database: Database) -> FlowRun:
    """One flow run by id, with its current state."""
    async with database.session() as session:
        run = await session.get(orm.FlowRun, flow_run_id)
        if run is None:
            raise not_found("flow run", flow_run_id)
        return FlowRun.model_validate(run)


@router.get("")
async def list_flow_runs(
    database: Database,
    paging: Paging,
    flow_id: Annotated[uuid.UUID | None, Query(description="Runs of this flow.")] = None,
    state_type: Annotated[
        list[StateType] | None, Query(description="Runs in any of these states.")
    ] = None,
    expected_start_after: Annotated[Timestamp | None, Query()] = None,
    expected_start_before: Annotated[Timestamp | None, Query()] = None,
) -> list[FlowRun]:
    """Flow runs, newest expected start first, filtered by flow, state and start time."""
    query = select(orm.FlowRun)
    if flow_id is not None:
        query = query.where(orm.FlowRun.flow_id == flow_id)
    if state_type:
        query = query.where(orm.FlowRun.state_type.in_(state_type))
    if expected_start_after is not None:
        query = query.where(orm.FlowRun.expected_start_time >= expected_start_after)
    if expected_start_before is not None:
        query = query.where(orm.FlowRun.expected_start_time < expected_start_before)
    query = query.order_by(orm.FlowRun.expected_start_time.desc(), orm.FlowRun.id)
    async with database.session() as session:
        runs = await session.scalars(query.limit(paging.limit).offset(paging.offset))
        return [FlowRun.model_validate(run) for run in runs]


@router.post(
    "/{flow_run_id}/set_state",
    status_code=201,
    responses={**NOT_FOUND, **BAD_BODY, **REFUSED_TRANSITION},
)
async def set_flow_run_state(
    flow_run_id: uuid.UUID, body: StateChange, database: Database
) -> State:
    """Put a flow run in a new state: the state joins its history and becomes current.

    The transition rules (README.md) decide which state may follow the current one; a
    refused change is a 409 naming both, ``force`` skips the rules. Changes of one run
    are serialised: entering RUNNING counts a run and sets the start time (the first
    time); entering a terminal state (COMPLETED, FAILED, CANCELLED, CRASHED) sets the
    end time; the state's time is the server's.
    """
    async with database.session(write=True) as session:
        try:
            return await enter_state(session, FLOW_RUN, flow_run_id, body, force=body.force)
        except RunNotFound:
            raise not_found("flow run", flow_run_id) from None


@router.get("/{flow_run_id}/states", responses=NOT_FOUND)
async def list_flow_run_states(
    flow_run_id: uuid.UUID, database: Database, paging: Paging
) -> list[State]:
    """The states a flow run went through, oldest first."""
    async with database.session() as session:
        try:
            return await state_history(
                session, FLOW_RUN, flow_run_id, limit=paging.limit, offset=paging.offset
            )
        except RunNotFound:
            raise not_found("flow run", flow_run_id) from None

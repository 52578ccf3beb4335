"""Task runs: create, read, list, and move through states (with their history)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from flowdb.database import orm_models as orm
from flowdb.database.column_types import StateType
from flowdb.errors import ConflictError
from flowdb.server.routes.common import (
    BAD_BODY,
    CONFLICT,
    NOT_FOUND,
    REFUSED_TRANSITION,
    Database,
    Paging,
    not_found,
)
from flowdb.server.schemas import State, StateChange, TaskRun, TaskRunCreate
from flowdb.server.states import TASK_RUN, RunNotFound, enter_state, state_history

router = APIRouter(prefix="/task_runs", tags=["task runs"])


@router.post("", status_code=201, responses={**NOT_FOUND, **CONFLICT, **BAD_BODY})
async def create_task_run(body: TaskRunCreate, database: Database) -> TaskRun:
    """Create a task run in a flow run; (flow run, task key, dynamic key) must be new."""
    async with database.session(write=True) as session:
        if await session.get(orm.FlowRun, body.flow_run_id) is None:
            raise not_found("flow run", body.flow_run_id)
        task_run = orm.TaskRun(id=uuid.uuid4(), run_count=0, **body.model_dump())
        try:
            async with session.begin_nested():
                session.add(task_run)
        except IntegrityError:
            raise ConflictError(
                f"The flow run {body.flow_run_id} has a task run with task key "
                f"{body.task_key!r} and dynamic key {body.dynamic_key!r} already."
            ) from None
        return TaskRun.model_validate(task_run)


@router.get("/{task_run_id}", responses=NOT_FOUND)
async def read_task_run(task_run_id: uuid.UUID, database: Database) -> TaskRun:
    """One task run by id."""
    async with database.session() as session:
        task_run = await session.get(orm.TaskRun, task_run_id)
        if task_run is None:
            raise not_found("task run", task_run_id)
        return TaskRun.model_validate(task_run)


@router.get("")
async def list_task_runs(
    database: Database,
    paging: Paging,
    flow_run_id: Annotated[uuid.UUID | None, Query(description="Tasks of this flow run.")] = None,
    state_type: Annotated[
        list[StateType] | None, Query(description="Task runs in any of these states.")
    ] = None,
) -> list[TaskRun]:
    """Task runs ordered by creation, filtered by flow run and state."""
    query = select(orm.TaskRun)
    if flow_run_id is not None:
        query = query.where(orm.TaskRun.flow_run_id == flow_run_id)
    if state_type:
        query = query.where(orm.TaskRun.state_type.in_(state_type))
    query = query.order_by(orm.TaskRun.created, orm.TaskRun.id)
    async with database.session() as session:
        task_runs = await session.scalars(query.limit(paging.limit).offset(paging.offset))
        return [TaskRun.model_validate(task_run) for task_run in task_runs]


@router.post(
    "/{task_run_id}/set_state",
    status_code=201,
    responses={**NOT_FOUND, **BAD_BODY, **REFUSED_TRANSITION},
)
async def set_task_run_state(
    task_run_id: uuid.UUID, body: StateChange, database: Database
) -> State:
    """Put a task run in a new state, by the same rules and with the same guarantees as
    a flow run's ``set_state``."""
    async with database.session(write=True) as session:
        try:
            return await enter_state(session, TASK_RUN, task_run_id, body, force=body.force)
        except RunNotFound:
            raise not_found("task run", task_run_id) from None


@router.get("/{task_run_id}/states", responses=NOT_FOUND)
async def list_task_run_states(
    task_run_id: uuid.UUID, database: Database, paging: Paging
) -> list[State]:
    """The states a task run went through, oldest first."""
    async with database.session() as session:
        try:
            return await state_history(
                session, TASK_RUN, task_run_id, limit=paging.limit, offset=paging.offset
            )
        except RunNotFound:
            raise not_found("task run", task_run_id) from None

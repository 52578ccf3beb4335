"""Task runs: create, read, list."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from flowdb.database import orm_models as orm
from flowdb.database.column_types import StateType
from flowdb.server.routes.common import BAD_BODY, CONFLICT, NOT_FOUND, Database, Paging, not_found
from flowdb.server.schemas import TaskRun, TaskRunCreate

router = APIRouter(prefix="/task_runs", tags=["task runs"])


@router.post("", status_code=201, responses={**NOT_FOUND, **CONFLICT, **BAD_BODY})
async def create_task_run(body: TaskRunCreate, database: Database) -> TaskRun:
    """Create a task run in a flow run; (flow run, task key, dynamic key) must be new."""
    async with database.session(write=True) as session:
        if await session.get(orm.FlowRun, body.flow_run_id) is None:
            raise not_found("flow run", body.flow_run_id)
        task_run = orm.TaskRun(id=uuid.uuid4(), run_count=0, **body.model_dump())
        session.add(task_run)
        await session.flush()
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

"""Logs: batch insert and list, in time order."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from flowdb.database import orm_models as orm
from flowdb.database.column_types import utcnow
from flowdb.errors import InvalidReferenceError
from flowdb.server.routes.common import BAD_BODY, NOT_FOUND, Database, Paging, not_found
from flowdb.server.schemas import Log, LogCreate, LogLevelQuery, LogsCreated

router = APIRouter(prefix="/logs", tags=["logs"])

MAX_BATCH = 1000


@router.post("", status_code=201, responses={**NOT_FOUND, **BAD_BODY})
async def create_logs(
    body: Annotated[list[LogCreate], Body(min_length=1, max_length=MAX_BATCH)],
    database: Database,
) -> LogsCreated:
    """Store a batch of log lines (up to 1000) in one transaction and one statement.

    A line sent with a task run only is stored with that task run's flow run, so every
    line is found by its flow run; a line with neither run is refused (422).
    """
    _require_a_run(body)
    now = utcnow()
    rows = [
        {"id": uuid.uuid4(), "created": now, "updated": now, **line.model_dump()} for line in body
    ]
    async with database.session(write=True) as session:
        flow_runs = {line.flow_run_id for line in body}
        task_runs = {line.task_run_id for line in body}
        await _require_existing(session, orm.FlowRun, "flow run", flow_runs)
        await _require_existing(session, orm.TaskRun, "task run", task_runs)
        await _require_task_runs_of_their_flow_runs(session, body)
        await _fill_flow_runs(session, rows)
        await session.execute(insert(orm.Log), rows)
    return LogsCreated(count=len(rows))


@router.get("")
async def list_logs(
    database: Database,
    paging: Paging,
    flow_run_id: Annotated[uuid.UUID | None, Query(description="Logs of this flow run.")] = None,
    task_run_id: Annotated[uuid.UUID | None, Query(description="Logs of this task run.")] = None,
    level_at_least: Annotated[LogLevelQuery | None, Query(description="Minimum level.")] = None,
) -> list[Log]:
    """Log lines in time order, filtered by run and minimum level."""
    query = select(orm.Log)
    if flow_run_id is not None:
        query = query.where(orm.Log.flow_run_id == flow_run_id)
    if task_run_id is not None:
        query = query.where(orm.Log.task_run_id == task_run_id)
    if level_at_least is not None:
        query = query.where(orm.Log.level >= level_at_least)
    query = query.order_by(orm.Log.timestamp, orm.Log.id)
    async with database.session() as session:
        logs = await session.scalars(query.limit(paging.limit).offset(paging.offset))
        return [Log.model_validate(log) for log in logs]


async def _require_existing(
    session: AsyncSession,
    model: type[orm.FlowRun] | type[orm.TaskRun],
    kind: str,
    ids: set[uuid.UUID | None],
) -> None:
    """404 for the first referenced id that names no row (one query per batch)."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return
    found = set(await session.scalars(select(model.id).where(model.id.in_(wanted))))
    missing = sorted(wanted - found)
    if missing:
        raise not_found(kind, missing[0])


def _require_a_run(lines: list[LogCreate]) -> None:
    """422 for the first line that names neither a flow run nor a task run."""
    for index, line in enumerate(lines):
        if line.flow_run_id is None and line.task_run_id is None:
            raise InvalidReferenceError(
                "A log line belongs to a run: give its flow_run_id (or the task_run_id of "
                "one of the flow run's task runs).",
                loc=("body", index, "flow_run_id"),
            )


async def _fill_flow_runs(session: AsyncSession, rows: list[dict[str, object]]) -> None:
    """Set each task-run-only row's ``flow_run_id`` to its task run's (one query per batch)."""
    wanted = {row["task_run_id"] for row in rows if row["flow_run_id"] is None}
    if not wanted:
        return
    query = select(orm.TaskRun.id, orm.TaskRun.flow_run_id).where(orm.TaskRun.id.in_(wanted))
    owners: dict[object, uuid.UUID] = dict(
        (task_id, flow_run_id) for task_id, flow_run_id in await session.execute(query)
    )
    for row in rows:
        if row["flow_run_id"] is None:
            row["flow_run_id"] = owners[row["task_run_id"]]


async def _require_task_runs_of_their_flow_runs(
    session: AsyncSession, lines: list[LogCreate]
) -> None:
    """422 for the first line whose task run belongs to another flow run than its own.

    The foreign keys cannot say that the two ids of one line belong together; one query
    per batch reads the task runs' flow runs.
    """
    pairs = [
        (index, line.task_run_id, line.flow_run_id)
        for index, line in enumerate(lines)
        if line.task_run_id is not None and line.flow_run_id is not None
    ]
    if not pairs:
        return
    task_ids = {task_id for _, task_id, _ in pairs}
    query = select(orm.TaskRun.id, orm.TaskRun.flow_run_id).where(orm.TaskRun.id.in_(task_ids))
    owners = {task_id: flow_run_id for task_id, flow_run_id in await session.execute(query)}
    for index, task_id, flow_run_id in pairs:
        if owners[task_id] != flow_run_id:
            raise InvalidReferenceError(
                f"The task run {task_id} belongs to the flow run {owners[task_id]}, "
                f"not to the flow run {flow_run_id} the log line names.",
                loc=("body", index, "task_run_id"),
            )

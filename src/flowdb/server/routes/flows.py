"""Flows: create, read, list."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from flowdb.database import orm_models as orm
from flowdb.errors import ConflictError
from flowdb.server.routes.common import (
    BAD_BODY,
    CONFLICT,
    NOT_FOUND,
    Database,
    Paging,
    contains_ignoring_case,
    not_found,
)
from flowdb.server.schemas import Flow, FlowCreate, SearchText

router = APIRouter(prefix="/flows", tags=["flows"])


@router.post("", status_code=201, responses={**CONFLICT, **BAD_BODY})
async def create_flow(body: FlowCreate, database: Database) -> Flow:
    """Create a flow; its name must not be taken (409 otherwise)."""
    async with database.session(write=True) as session:
        flow = orm.Flow(id=uuid.uuid4(), name=body.name, tags=body.tags)
        try:
            async with session.begin_nested():
                session.add(flow)
        except IntegrityError:
            raise ConflictError(f"A flow named {body.name!r} exists already.") from None
        return Flow.model_validate(flow)


@router.get("/{flow_id}", responses=NOT_FOUND)
async def read_flow(flow_id: uuid.UUID, database: Database) -> Flow:
    """One flow by id."""
    async with database.session() as session:
        flow = await session.get(orm.Flow, flow_id)
        if flow is None:
            raise not_found("flow", flow_id)
        return Flow.model_validate(flow)


@router.get("")
async def list_flows(
    database: Database,
    paging: Paging,
    name_contains: Annotated[SearchText | None, Query(description="Part of the name.")] = None,
) -> list[Flow]:
    """Flows ordered by name, optionally those whose name contains a text (ignoring case)."""
    query = select(orm.Flow).order_by(orm.Flow.name)
    if name_contains:
        query = query.where(contains_ignoring_case(orm.Flow.name, name_contains))
    async with database.session() as session:
        flows = await session.scalars(query.limit(paging.limit).offset(paging.offset))
        return [Flow.model_validate(flow) for flow in flows]

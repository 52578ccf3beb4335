"""Destructive database routes for test and development servers, off unless enabled.

They are always documented, and answer 403 with the setting to change while
``FLOWDB_SERVER_ADMIN_ROUTES`` is off. Drop and create run under the same migration
lock as the CLI, so they never interleave with an upgrade from elsewhere.
"""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Depends, HTTPException, Request

from flowdb.server.routes.common import Database, Responses
from flowdb.server.schemas import AdminResult, ErrorBody
from flowdb.settings import Settings

FORBIDDEN: Responses = {403: {"model": ErrorBody, "description": "Admin routes are disabled."}}


def _admin_enabled(request: Request) -> None:
    settings: Settings = request.app.state.settings
    if not settings.server_admin_routes:
        raise HTTPException(
            status_code=403,
            detail="Admin database routes are disabled; start the server with "
            "FLOWDB_SERVER_ADMIN_ROUTES=true to enable them.",
        )


router = APIRouter(
    prefix="/admin/database",
    tags=["admin"],
    dependencies=[Depends(_admin_enabled)],
    responses=FORBIDDEN,
)


@router.post("/clear")
async def clear(database: Database) -> AdminResult:
    """Delete every row of every flowdb table; the schema stays as it is."""
    from sqlalchemy import text

    from flowdb.database.orm_models import Base

    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]  # children first
    async with database.session(write=True) as session:
        for statement in database.database.dialect.clear_statements(tables):
            await session.execute(text(statement))
    return await _result(database, "clear")


@router.post("/drop")
async def drop(database: Database, request: Request) -> AdminResult:
    """Drop every flowdb table; the server is not ready until ``create`` runs."""
    from flowdb.database.maintenance import drop_database

    request.app.state.readiness.forget()
    await database.dispose()
    await to_thread.run_sync(drop_database, database.database)
    return await _result(database, "drop")


@router.post("/create")
async def create(database: Database, request: Request) -> AdminResult:
    """Upgrade the database to head (creating every table on an empty database)."""
    from flowdb.database.interface import ensure_schema

    await to_thread.run_sync(ensure_schema, database.database)
    request.app.state.readiness.forget()
    return await _result(database, "create")


async def _result(database: Database, action: str) -> AdminResult:
    status = await to_thread.run_sync(database.database.status)
    return AdminResult(action=action, schema_revision=status.current)

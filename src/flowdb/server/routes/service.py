"""Liveness, readiness and version: what load balancers and operators poll."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Response

from flowdb import __version__
from flowdb.errors import FlowdbError
from flowdb.server.routes.common import UNAVAILABLE, Database
from flowdb.server.schemas import ErrorBody, Health, Readiness, VersionInfo

router = APIRouter(tags=["service"])


@router.get("/health")
async def health() -> Health:
    """The process is alive (says nothing about the database)."""
    return Health(status="ok")


@router.get(
    "/ready",
    responses={503: {"model": ErrorBody, "description": "Not ready; the reason is given."}},
)
async def ready(database: Database, response: Response) -> Readiness | ErrorBody:
    """The database is reachable and at the schema revision this server was built for."""
    try:
        status = await to_thread.run_sync(database.database.status)
    except FlowdbError as error:
        response.status_code = 503
        return ErrorBody(detail=str(error))
    if not status.at_head:
        response.status_code = 503
        where = status.current or "base (no schema)"
        return ErrorBody(
            detail=f"The database is at revision {where}, not at head {status.head}; "
            "run 'flowdb database upgrade -y'."
        )
    return Readiness(status="ready", schema_revision=status.current, head=status.head)


@router.get("/admin/version", responses=UNAVAILABLE)
async def version(database: Database) -> VersionInfo:
    """flowdb's version and the database's schema revision."""
    status = await to_thread.run_sync(database.database.status)
    return VersionInfo(
        version=__version__,
        schema_revision=status.current,
        head=status.head,
        dialect=database.database.dialect.name,
    )

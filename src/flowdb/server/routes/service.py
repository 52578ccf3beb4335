"""Liveness, readiness and version: what load balancers and operators poll."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Request, Response

from flowdb import __version__
from flowdb.errors import FlowdbError
from flowdb.server.readiness import ReadinessCache
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
async def ready(database: Database, request: Request, response: Response) -> Readiness | ErrorBody:
    """The database is reachable and its schema serves this server's code.

    That is: at head, or behind it while a migration runs whose new tables and columns
    are already there (``server.readiness``), so replicas stay in service during upgrades.
    The verdict is cached while the version row is unchanged (``ReadinessCache``).
    """
    cache: ReadinessCache = request.app.state.readiness
    try:
        verdict = await cache.verdict(database)
    except FlowdbError as error:
        response.status_code = 503
        return ErrorBody(detail=str(error))
    if not verdict.ready:
        response.status_code = 503
        return ErrorBody(detail=verdict.detail)
    return Readiness(
        status="ready", schema_revision=verdict.current, head=verdict.head, detail=verdict.detail
    )


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

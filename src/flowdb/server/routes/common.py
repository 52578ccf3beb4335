"""What every route module needs: the database, pagination, and 404s that name the id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Query, Request

from flowdb.server.engine import ServerDatabase
from flowdb.server.schemas import ErrorBody


def server_database(request: Request) -> ServerDatabase:
    """The process's database access, made by ``create_app``."""
    database: ServerDatabase = request.app.state.database
    return database


Database = Annotated[ServerDatabase, Depends(server_database)]


@dataclass(frozen=True)
class Page:
    """Which slice of a list to return."""

    limit: int
    offset: int


def page(
    limit: Annotated[int, Query(ge=1, le=200, description="Items per page.")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="Items to skip.")] = 0,
) -> Page:
    """Pagination parameters shared by every list route."""
    return Page(limit=limit, offset=offset)


Paging = Annotated[Page, Depends(page)]

Responses = dict[int | str, dict[str, Any]]

NOT_FOUND: Responses = {
    404: {"model": ErrorBody, "description": "An id in the request names nothing."}
}
#: A body that is not JSON at all (bad UTF-8, truncated, nested too deeply) is a 400.
BAD_BODY: Responses = {400: {"model": ErrorBody, "description": "The body is not valid JSON."}}
CONFLICT: Responses = {409: {"model": ErrorBody, "description": "A unique field is already taken."}}
UNAVAILABLE: Responses = {
    503: {
        "model": ErrorBody,
        "description": "The database did not answer in time or cannot be reached; the "
        "message names the setting that bounds the wait. Try again.",
    }
}
REFUSED_TRANSITION: Responses = {
    409: {
        "model": ErrorBody,
        "description": "The transition rules refuse this change; the current and the "
        "requested state are named.",
    }
}


def not_found(kind: str, identifier: uuid.UUID) -> HTTPException:
    """The 404 for an unknown id, naming what was looked for."""
    return HTTPException(status_code=404, detail=f"No {kind} with id {identifier}.")


def contains_ignoring_case(column: Any, text: str) -> Any:
    """SQL: ``column`` contains ``text``, ignoring case, the same on every dialect.

    Both sides go through the database's ``lower()`` (SQLite's LIKE ignores ASCII case
    only, PostgreSQL's not at all); LIKE's wildcards in ``text`` are matched literally.
    """
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    pattern = sa.func.lower(sa.literal("%" + escaped + "%"))
    return sa.func.lower(column).like(pattern, escape="/")

"""How the API answers failures: one sentence written by flowdb, the same on every dialect.

Clients see no driver text (it differs per dialect and may quote values) and never
the database's location. Bad input is a 422 naming the field (a body that is not JSON
at all, 400, saying whether its UTF-8 or its JSON is broken); conflicts are 409s; a
database that cannot answer in time is a 503 naming the setting that decides how long
it may take.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError

from flowdb.database.dialects.base import first_line
from flowdb.database.failures import translate
from flowdb.errors import (
    ConflictError,
    DatabaseBusyError,
    DatabaseReadOnlyError,
    DatabaseUnreachableError,
    DiskFullError,
    FlowdbError,
    InvalidReferenceError,
    one_line_message,
)
from flowdb.server.engine import ServerDatabase

#: What the API says for each kind of database failure (its own messages name places).
UNAVAILABLE = {
    DatabaseUnreachableError: "The database cannot be reached; try again shortly.",
    DatabaseBusyError: "The database stayed locked by other work; try again.",
    DatabaseReadOnlyError: "The database refused to write (read-only, or not permitted).",
    DiskFullError: "The database has no space left; nothing was stored.",
}
FAILED = "The database failed to answer; try again."

logger = logging.getLogger("flowdb.server")


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(IntegrityError, _conflict)
    app.add_exception_handler(DBAPIError, _database_failure)
    app.add_exception_handler(FlowdbError, _flowdb_failure)


def _detail(status: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail})


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default echoes each bad input back; an input such as NaN cannot be
    # rendered as JSON, which would turn a 422 into a 500. Where and why is enough.
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    unreadable = [error for error in errors if error["type"] == "json_invalid"]
    if unreadable:
        reason = unreadable[0].get("ctx", {}).get("error", "it cannot be parsed")
        return _detail(400, f"The body is not valid JSON ({reason}).")
    return JSONResponse(
        status_code=422,
        content={
            "detail": [
                {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
                for error in errors
            ]
        },
    )


def unreadable_body(cause: BaseException) -> str:
    """The 400's sentence for a body that could not be decoded before JSON parsing."""
    if isinstance(cause, UnicodeDecodeError):
        byte = bytes(cause.object[cause.start : cause.start + 1]).hex()
        if cause.encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
            return f"The body is not valid UTF-8 (byte 0x{byte} at offset {cause.start})."
        # json.loads guesses UTF-16 and UTF-32 from the first bytes, as RFC 4627 allowed.
        guessed = cause.encoding.upper()
        return f"The body is not valid UTF-8 (nor the {guessed} its first bytes suggest)."
    if isinstance(cause, RecursionError):
        return "The body is not valid JSON (it is nested too deeply)."
    return "The body is not valid JSON (it cannot be decoded)."


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    # Routes name the unique field they know of; this is the fallback for the rest.
    return _detail(409, "The request conflicts with an existing record.")


def _log_cause(request: Request, cause: str) -> None:
    """Log once why a request got a 503: the client sees a short sentence, operators the cause."""
    logger.error("%s %s answered 503: %s", request.method, request.url.path, cause)


def _unavailable(error: FlowdbError | None) -> str:
    for kind, message in UNAVAILABLE.items():
        if isinstance(error, kind):
            return message
    return FAILED


async def _database_failure(request: Request, exc: Exception) -> JSONResponse:
    database: ServerDatabase = request.app.state.database
    timeout = database.database.dialect.server_timeout_message(exc, first_line(exc))
    translated = translate(exc, database.database)
    # The driver's first line, never the SQL and parameters SQLAlchemy appends.
    _log_cause(request, one_line_message(translated) if translated else first_line(exc))
    if timeout is not None:
        return _detail(503, timeout)
    return _detail(503, _unavailable(translated))


async def _flowdb_failure(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FlowdbError)
    if isinstance(exc, ConflictError):
        return _detail(409, str(exc))
    if isinstance(exc, InvalidReferenceError):
        # The shape of every other 422, so that one schema describes them all.
        error = {"loc": list(exc.loc), "msg": str(exc), "type": "invalid_reference"}
        return JSONResponse(status_code=422, content={"detail": [error]})
    _log_cause(request, one_line_message(exc))
    return _detail(503, _unavailable(exc))

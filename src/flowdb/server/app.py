"""The FastAPI application: ``create_app()`` is what uvicorn serves (``factory=True``).

On start-up every worker calls ``ensure_schema()``: with ``FLOWDB_MIGRATE_ON_START``
on, it upgrades the database under the cross-process migration lock (one worker of
one replica does the work, the rest wait and find it at head); with it off, a
database that is not at head stops the worker. At head it costs one query. The check
runs in ``_SchemaGate``, before the app's own lifespan, so that a failure reaches
uvicorn as one line instead of a traceback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowdb import __version__
from flowdb.database.failures import translate
from flowdb.database.target import Database
from flowdb.errors import FlowdbError, one_line_message
from flowdb.server.engine import ServerDatabase
from flowdb.settings import Settings


class _SchemaGate:
    """ASGI middleware: on lifespan start-up, ensure the schema before the app starts.

    A ``FlowdbError`` is answered with ``lifespan.startup.failed`` carrying the one-line
    message; uvicorn logs it and stops the worker. (Raised inside the app's lifespan,
    it would be logged with a full traceback.)
    """

    def __init__(self, app: ASGIApp, database: Database) -> None:
        self.app = app
        self.database = database

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        from anyio import to_thread

        from flowdb.database.interface import ensure_schema

        startup = await receive()
        try:
            migrate = self.database.settings.migrate_on_start
            await to_thread.run_sync(partial(ensure_schema, self.database, migrate=migrate))
        except FlowdbError as error:
            message = f"Error: {one_line_message(error)}"
            await send({"type": "lifespan.startup.failed", "message": message})
            return
        pending: list[Message] = [startup]

        async def replay_startup() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay_startup, send)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await app.state.database.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for the database of ``settings`` (default: read now, once)."""
    from flowdb.server.routes import admin, flow_runs, flows, logs, service, task_runs

    database = Database.from_settings(settings)
    settings = database.settings
    app = FastAPI(
        title="flowdb orchestration API",
        version=__version__,
        description="Flows, flow runs, task runs and logs, stored by flowdb.",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.database = ServerDatabase(database)
    for module in (service, admin, flows, flow_runs, task_runs, logs):
        app.include_router(module.router, prefix="/api")
    app.add_middleware(_SchemaGate, database=database)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(IntegrityError, _conflict)
    app.add_exception_handler(DBAPIError, _database_failure)
    app.add_exception_handler(FlowdbError, _flowdb_failure)
    return app


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default echoes each bad input back; an input such as NaN cannot be
    # rendered as JSON, which would turn a 422 into a 500. Where and why is enough.
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": errors})


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    # Unique constraints are checked by the database, atomically; the message names
    # the constraint without echoing driver internals.
    text = str(getattr(exc, "orig", exc)).splitlines()[0]
    return JSONResponse(
        status_code=409, content={"detail": f"Conflicts with an existing record ({text})."}
    )


async def _database_failure(request: Request, exc: Exception) -> JSONResponse:
    database: ServerDatabase = request.app.state.database
    translated = translate(exc, database.database)
    detail = str(translated) if translated else "The database failed to answer; try again."
    return JSONResponse(status_code=503, content={"detail": detail})


async def _flowdb_failure(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": str(exc)})

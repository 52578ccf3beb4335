"""The FastAPI application: ``create_app()`` is what uvicorn serves (``factory=True``).

On start-up every worker calls ``ensure_schema()``: with ``FLOWDB_MIGRATE_ON_START``
on, it upgrades the database under the cross-process migration lock (one worker of
one replica does the work, the rest wait and find it at head); with it off, a
database behind head does not stop the worker: it listens at once and waits for the
migration job (``schema_wait``). At head it costs one query. The check
runs in ``_SchemaGate``, before the app's own lifespan, so that a failure reaches
uvicorn as one line instead of a traceback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowdb import __version__
from flowdb.database.target import Database
from flowdb.errors import FlowdbError, one_line_message
from flowdb.server import edges, failures, http, openapi, retention
from flowdb.server.engine import ServerDatabase
from flowdb.server.readiness import ReadinessCache
from flowdb.server.requests import RequestObserver
from flowdb.server.routes.common import UNAVAILABLE
from flowdb.server.schema_wait import SchemaWait
from flowdb.settings import Settings


class _SchemaGate:
    """ASGI middleware: on lifespan start-up, ensure the schema before the app starts.

    A ``FlowdbError`` is answered with ``lifespan.startup.failed`` carrying the one-line
    message; uvicorn logs it and stops the worker. (Raised inside the app's lifespan,
    it would be logged with a full traceback.) With ``FLOWDB_MIGRATE_ON_START`` off and
    the schema behind head, the app starts anyway and waits in a thread
    (``schema_wait.SchemaWait``), answering 503 with the wait's state until head.
    """

    def __init__(self, app: ASGIApp, database: Database) -> None:
        self.app = app
        self.database = database
        self.wait: SchemaWait | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wait = self.wait
        waiting = wait is not None and scope["type"] == "http" and not wait.ready
        if waiting and wait is not None and await wait.answer(scope, receive, send):
            return
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        from anyio import to_thread

        startup = await receive()
        try:
            await to_thread.run_sync(self._check)
        except FlowdbError as error:
            message = f"Error: {one_line_message(error)}"
            await send({"type": "lifespan.startup.failed", "message": message})
            return
        if self.wait is not None:
            self.wait.start()
        pending: list[Message] = [startup]

        async def replay_startup() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay_startup, send)

    def _check(self) -> None:
        """Upgrade (migrate on start), or look once and, behind head, prepare the wait."""
        from flowdb.database.interface import ensure_schema
        from flowdb.database.waiting import first_look

        if self.database.settings.migrate_on_start:
            ensure_schema(self.database, migrate=True)
        elif not first_look(self.database):
            self.wait = SchemaWait(self.database)
            self.wait.prime()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    from flowdb.server.heartbeat import Heartbeat

    http.stop_when_master_dies()
    heartbeat = Heartbeat(app.state.database.database)
    await heartbeat.start()
    app.state.retention = retention.start(app.state.database.database)
    try:
        yield
    finally:
        if app.state.retention is not None:
            await app.state.retention.stop()
        await heartbeat.stop()
        await app.state.database.dispose()


def _operation_id(route: APIRoute) -> str:
    """Each operation's id is its function's name (``create_flow``, ``set_flow_run_state``):
    stable names for generated clients, unlike FastAPI's path-derived ones."""
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for the database of ``settings`` (default: read now, once)."""
    from flowdb.server.routes import admin, flow_runs, flows, logs, metrics, service, task_runs

    database = Database.from_settings(settings)
    settings = database.settings
    app = FastAPI(
        title="flowdb orchestration API",
        version=__version__,
        description="Flows, flow runs, task runs and logs, stored by flowdb.",
        lifespan=_lifespan,
        generate_unique_id_function=_operation_id,
        dependencies=[Depends(edges.refuse_unknown_query_parameters)],
    )
    app.state.settings = settings
    if settings.log_format == "json":
        import logging

        logging.captureWarnings(True)  # a library's warning becomes a JSON line too
    app.state.database = ServerDatabase(database)
    app.state.metrics = None
    if settings.server_metrics:
        from flowdb.server.metrics import Metrics

        app.state.metrics = Metrics(app.state.database)
        app.add_api_route("/metrics", metrics.metrics, include_in_schema=False)
    app.state.readiness = ReadinessCache()
    prefix = "/api"
    app.include_router(service.router, prefix=prefix)
    data_routers = [module.router for module in (admin, flows, flow_runs, task_runs, logs)]
    for router in data_routers:
        app.include_router(router, prefix=prefix, responses=UNAVAILABLE)
    # Its own routes (documents, /metrics), then the routers' under their prefix, as tried.
    routes = [("", route) for route in app.router.routes] + [
        (prefix, route) for router in (service.router, *data_routers) for route in router.routes
    ]
    app.add_middleware(_SchemaGate, database=database)
    # Added later is outer: credentials are checked before any body is read.
    app.add_middleware(edges.BodyLimit, limit=settings.server_max_body_bytes)
    credentials = settings.api_credentials()
    if credentials is not None:
        app.add_middleware(edges.Credentials, credentials=credentials)
    openapi.install(app, credentials)
    failures.install(app)
    http.install(app)
    # Outermost: what it measures and logs is what the client got, refusals included.
    app.add_middleware(
        RequestObserver,
        routes=routes,
        metrics=app.state.metrics,
        log_requests=settings.log_format == "json",
    )
    return app

"""HTTP conventions clients rely on, applied to every route.

* A path answers with and without a trailing slash (Prefect's clients call
  ``POST /api/flows/``); no redirect, which clients would not follow for a POST.
* ``HEAD`` works wherever ``GET`` does: the GET response without its body.
* A 405 lists in ``Allow`` every method the path answers, not only those of the first
  route that matched it.
* A worker of ``flowdb server start --workers N`` stops when its master dies, so that
  no orphan keeps serving on the port (and a restart can bind it).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowdb.server.failures import unreadable_body


class Conventions:
    """ASGI middleware: trailing slashes stripped, HEAD answered as GET without a body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path[:-1], "raw_path": scope.get("raw_path", b"")[:-1]}
        if scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET", "flowdb_head": True}, receive, without_body)


#: The methods a 405's ``Allow`` may list (HEAD is added where GET is).
METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route answers on the path of ``scope`` (HEAD where GET is).

    Each method is tried against every route, so the answer does not depend on how
    routes are grouped or which of them matched the path first.
    """
    routes = app.router.routes
    methods = {
        method
        for method in METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    }
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    cause = exc.__cause__
    if exc.status_code == 400 and cause is not None and not isinstance(cause, HTTPException):
        # FastAPI's own sentence for a body it could not decode (bad UTF-8, too deep).
        exc = HTTPException(400, unreadable_body(cause))
    if exc.status_code == 405:
        allow = ", ".join(allowed_methods(request.app, request.scope))
        method = "HEAD" if request.scope.get("flowdb_head") else request.method
        exc = HTTPException(
            405, f"{method} is not allowed here; allowed: {allow}.", headers={"Allow": allow}
        )
    return await http_exception_handler(request, exc)


def install(app: FastAPI) -> None:
    """Apply the conventions to ``app``: the middleware, and the 405's ``Allow``."""
    app.router.redirect_slashes = False
    app.add_middleware(Conventions)
    app.add_exception_handler(HTTPException, _http_error)


def stop_when_master_dies() -> None:
    """In a worker process of a multi-process server, SIGTERM this process when its
    master exits (even by ``kill -9``), so that the worker shuts down gracefully instead
    of serving on as an orphan. A process started any other way is left alone."""
    master = multiprocessing.parent_process()
    if master is None:
        return

    def watch() -> None:
        master.join()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="flowdb-master-watch", daemon=True).start()

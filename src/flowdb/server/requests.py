"""Every request's id, timing and outcome: the ``X-Request-ID`` header, metrics, access log.

``RequestObserver`` is the outermost middleware, so what it sees is what the client got,
refusals included (401, 413). A request carrying a well-formed ``X-Request-ID`` keeps it
(a proxy or client chose it, to follow one call through several systems); any other gets
a new one. Either way the response carries it back.

The route is recorded as its template (``/api/flow_runs/{id}``): the path is matched again
against a table of the app's route templates once the response is sent, because routing
happens in a copy of the request's scope (``http.Conventions``) that this middleware never
sees, and a refused request (401, 413) never reaches the router at all.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from fastapi import FastAPI
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowdb.server.metrics import UNMATCHED, Metrics

HEADER = "x-request-id"
#: An id a client may choose: up to 128 visible ASCII characters without spaces.
_ACCEPTED_ID = re.compile(r"[!-~]{1,128}")

access = logging.getLogger("flowdb.server.access")


class RequestObserver:
    """ASGI middleware: request id in and out; each answered request measured and logged.

    ``metrics`` is ``None`` when ``/metrics`` is off; ``log_requests`` writes one record per
    request on ``flowdb.server.access`` (structured logs replace uvicorn's access lines).
    """

    def __init__(
        self,
        app: ASGIApp,
        application: FastAPI,
        metrics: Metrics | None,
        log_requests: bool,
    ) -> None:
        self.app = app
        self.application = application
        self._table: list[tuple[re.Pattern[str], str, frozenset[str] | None]] | None = None
        self.metrics = metrics
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        started = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != HEADER.encode()
                ]
                headers.append((HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = self.route_of(scope)
            method = str(scope["method"])
            if self.metrics is not None:
                self.metrics.observe(method, route, status, seconds)
            if self.log_requests:
                access.info(
                    "%s %s %d %.1f ms",
                    method,
                    route,
                    status,
                    seconds * 1000,
                    extra={
                        "fields": {
                            "request_id": request_id,
                            "method": method,
                            "route": route,
                            "status": status,
                            "latency_ms": round(seconds * 1000, 3),
                        }
                    },
                )

    def route_of(self, scope: Scope) -> str:
        """The template of the route that answers ``scope``'s path, or ``UNMATCHED``.

        A route matching the path but not the method (a 405) still names it.
        """
        if self._table is None:
            self._table = route_table(self.application)
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]  # as http.Conventions routes it
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        partial = UNMATCHED
        for pattern, template, methods in self._table:
            if pattern.match(path):
                if methods is None or method in methods:
                    return template
                if partial == UNMATCHED:
                    partial = template
        return partial


def route_table(application: FastAPI) -> list[tuple[re.Pattern[str], str, frozenset[str] | None]]:
    """Each route's path pattern, template and methods, in the order the router tries them.

    Read from the app's own routes and its OpenAPI paths (which carry the routers'
    prefixes), so it does not depend on how FastAPI nests included routers.
    """
    entries: list[tuple[str, frozenset[str] | None]] = []
    for route in application.router.routes:
        path = getattr(route, "path", None)
        methods = getattr(route, "methods", None)
        if isinstance(path, str):
            entries.append((path, frozenset(methods) if methods else None))
    for path, operations in application.openapi().get("paths", {}).items():
        entries.append((path, frozenset(method.upper() for method in operations)))
    return [(compile_path(path)[0], path, methods) for path, methods in entries]


def _request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when well formed, else a new random id."""
    for name, value in scope.get("headers", []):
        if name.lower() == HEADER.encode():
            text = str(value.decode("latin-1")).strip()
            if _ACCEPTED_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex

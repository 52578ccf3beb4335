"""Every request's id, timing and outcome: the ``X-Request-ID`` header, metrics, access log.

``RequestObserver`` is the outermost middleware, so what it sees is what the client got,
refusals included (401, 413). A request carrying a well-formed ``X-Request-ID`` keeps it
(a proxy or client chose it, to follow one call through several systems); any other gets
a new one. Either way the response carries it back.

The route is recorded as its template (``/api/flow_runs/{id}``): the path is matched again
against a table of the app's route templates once the response is sent, because routing
happens in a copy of the request's scope (``http.Conventions``) that this middleware never
sees, and a refused request (401, 413) never reaches the router at all. The table is built
from the routes as ``create_app`` mounts them (each with its router's prefix), not from the
OpenAPI document, whose generation cost every server process about 70 ms of CPU on its
first request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable

from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowdb.server.metrics import UNMATCHED, Metrics

HEADER = "x-request-id"
#: An id a client may choose: up to 128 visible ASCII characters without spaces.
_ACCEPTED_ID = re.compile(r"[!-~]{1,128}")

access = logging.getLogger("flowdb.server.access")


class RequestObserver:
    """ASGI middleware: request id in and out; each answered request measured and logged.

    ``routes`` are the app's routes as ``(prefix, route)`` pairs, in the order its router
    tries them (``route_table``). ``metrics`` is ``None`` when ``/metrics`` is off;
    ``log_requests`` writes one record per request on ``flowdb.server.access`` (structured
    logs replace uvicorn's access lines).
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: Iterable[tuple[str, BaseRoute]],
        metrics: Metrics | None,
        log_requests: bool,
    ) -> None:
        self.app = app
        self._table = route_table(routes)
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


def route_table(
    routes: Iterable[tuple[str, BaseRoute]],
) -> list[tuple[re.Pattern[str], str, frozenset[str] | None]]:
    """Each route's path pattern, template (its prefix and path) and methods, in the order
    given; a route without a path of its own (a mount of routers) is left out."""
    table = []
    for prefix, route in routes:
        path = getattr(route, "path", None)
        if isinstance(path, str):
            methods = getattr(route, "methods", None)
            template = prefix + path
            table.append((compile_path(template)[0], template, frozenset(methods or ()) or None))
    return table


def _request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when well formed, else a new random id."""
    for name, value in scope.get("headers", []):
        if name.lower() == HEADER.encode():
            text = str(value.decode("latin-1")).strip()
            if _ACCEPTED_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex

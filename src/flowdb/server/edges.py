"""What every request passes before a route sees it: credentials, then the body's size.

* With ``FLOWDB_SERVER_API_AUTH`` set, a request without those credentials is a 401
  carrying ``WWW-Authenticate``, before its body is read. ``/api/health`` and
  ``/api/ready`` stay open: liveness and readiness probes (Kubernetes, load balancers'
  target checks) often cannot send a header, and neither answer says more than the
  schema revision, which is public in the package itself.
* A body larger than ``FLOWDB_SERVER_MAX_BODY_BYTES`` is a 413: at once when its
  ``Content-Length`` says so, otherwise as soon as the chunks read so far exceed it,
  so a huge body is never held in memory.
* A query parameter the matched route does not declare is a 422 naming it (a misspelt
  filter would otherwise be ignored and the whole list returned). The route's own
  declaration decides, so a new route is covered without a list to keep.

Every refusal has the shape of flowdb's other errors (``{"detail": "..."}``).
"""

from __future__ import annotations

import base64
import binascii
import hmac

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowdb.settings import ApiCredentials

#: Paths answered without credentials (after ``http.Conventions`` strips a trailing slash).
OPEN_PATHS = frozenset({"/api/health", "/api/ready"})
REALM = "flowdb"


class Credentials:
    """ASGI middleware: every request but ``OPEN_PATHS`` must carry ``credentials``."""

    def __init__(self, app: ASGIApp, credentials: ApiCredentials) -> None:
        self.app = app
        self.scheme = credentials.scheme
        # Compared as bytes: hmac.compare_digest takes str only when it is ASCII.
        self.expected = credentials.secret.encode("utf-8")
        self.challenge = (
            f'Basic realm="{REALM}", charset="UTF-8"'
            if credentials.scheme == "basic"
            else f'Bearer realm="{REALM}"'
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._carried(scope):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            status_code=401,
            content={"detail": self._refusal(scope)},
            headers={"WWW-Authenticate": self.challenge},
        )
        await response(scope, receive, send)

    def _presented(self, scope: Scope) -> bytes | None:
        """The secret the request's ``Authorization`` header carries for our scheme."""
        header = Headers(scope=scope).get("authorization")
        if header is None:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != self.scheme:
            return None
        value = value.strip()
        if self.scheme == "bearer":
            return value.encode("utf-8", "surrogateescape")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None

    def _carried(self, scope: Scope) -> bool:
        presented = self._presented(scope)
        # Compared even when nothing was presented, so refusals all take the same time.
        matches = hmac.compare_digest(presented or b"", self.expected)
        return presented is not None and matches

    def _refusal(self, scope: Scope) -> str:
        """Why the request is refused; never echoes what it sent."""
        if "authorization" not in Headers(scope=scope):
            how = "HTTP Basic" if self.scheme == "basic" else "a bearer token"
            return f"This API requires credentials ({how} in the Authorization header)."
        return "The credentials in the Authorization header are not accepted."


class BodyTooLarge(HTTPException):
    """A request body over the limit (an ``HTTPException``, so FastAPI's body reading
    passes it on to the handler instead of turning it into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"The request body is larger than {limit} bytes; send less per request "
            "or raise FLOWDB_SERVER_MAX_BODY_BYTES.",
            # The rest of the body is never read: the connection cannot be reused.
            headers={"Connection": "close"},
        )


class BodyLimit:
    """ASGI middleware: refuse a request body of more than ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await _answer(BodyTooLarge(self.limit), scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def noting_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, noting_send)
        except BodyTooLarge as error:
            # Routes read bodies through FastAPI, whose handler answers this; a body read
            # elsewhere (a middleware) ends here.
            if started:
                raise
            await _answer(error, scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None when absent or malformed (the body is counted)."""
    value = Headers(scope=scope).get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


async def _answer(error: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(
        status_code=error.status_code, content={"detail": error.detail}, headers=error.headers
    )
    await response(scope, receive, send)


def refuse_unknown_query_parameters(request: Request) -> None:
    """A dependency of every route: 422 naming each query parameter the route does not
    declare (in the shape of every other 422: one error per parameter)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - declared)
    if not unknown:
        return
    accepted = ", ".join(sorted(declared)) or "none"
    raise RequestValidationError(
        [
            {
                "loc": ("query", name),
                "msg": f"Unknown query parameter {name!r}; this route accepts: {accepted}.",
                "type": "unknown_query_parameter",
            }
            for name in unknown
        ]
    )


def _query_names(dependant: Dependant) -> set[str]:
    """The names (aliases) of the query parameters ``dependant`` and its dependencies read."""
    names = {field.alias for field in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names

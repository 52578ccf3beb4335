"""The OpenAPI document states the answers ``server.edges`` gives on every route.

FastAPI documents what each route declares; the edges answer before a route runs, so
their answers are added here: a 422 on every operation (an unknown query parameter,
even where a route takes no input), a 413 wherever a body is accepted, and, with
``FLOWDB_SERVER_API_AUTH`` set, the security scheme and a 401 on every operation but
the open ones.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from flowdb.server.edges import OPEN_PATHS
from flowdb.settings import ApiCredentials

_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_INVALID = {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def install(app: FastAPI, credentials: ApiCredentials | None) -> None:
    """Make ``app.openapi()`` return the document with the edges' answers (built once)."""

    generate = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            add_edge_answers(generate(), credentials)  # FastAPI's, cached by it
        return generate()

    app.openapi = document  # type: ignore[method-assign]


def add_edge_answers(schema: dict[str, Any], credentials: ApiCredentials | None) -> None:
    """Add to ``schema``'s operations the 401, 413 and 422 the edges may answer."""
    scheme_name = None
    if credentials is not None:
        scheme_name = f"{credentials.scheme}Auth"
        scheme = {"type": "http", "scheme": credentials.scheme}
        schema.setdefault("components", {}).setdefault("securitySchemes", {})[scheme_name] = scheme
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            responses.setdefault(
                "422",
                {"description": "An unknown query parameter.", "content": _INVALID},
            )
            if "requestBody" in operation:
                responses.setdefault(
                    "413",
                    {
                        "description": "The body is larger than FLOWDB_SERVER_MAX_BODY_BYTES.",
                        "content": _ERROR_BODY,
                    },
                )
            if scheme_name is None:
                continue
            if path in OPEN_PATHS:
                operation["security"] = []
                continue
            operation["security"] = [{scheme_name: []}]
            responses.setdefault(
                "401",
                {"description": "Credentials are missing or wrong.", "content": _ERROR_BODY},
            )

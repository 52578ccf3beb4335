"""Property-based requests from the API's own OpenAPI document (schemathesis).

Every operation is called with generated valid and invalid inputs, on SQLite,
PostgreSQL and MariaDB. No response may be a 500, and every response must match what
the document declares (status code, content type, body schema): the document is the
contract clients are generated from.

Generating the cases is nearly all of the cost (schemathesis' negative mode above
all), so each generated case is sent to all three dialects' APIs in turn: every
dialect still answers ``EXAMPLES_PER_OPERATION`` cases per operation and mode, for a
third of the generation. The operations are dealt into ``SHARDS`` items per mode so
that the items spread over the suite's workers.

One of schemathesis' own steps is left out for long strings (``_short_bounds_only``):
it folds a string's ``maxLength`` into its ``pattern`` as a repetition count, and the
regular expression engine that then builds every mutated schema of negative mode takes
about a second per build for a count of 100,000 (the limit of ``Text``), which was two
thirds of this file's time. Such a string keeps its ``pattern`` and ``maxLength`` side by
side, as the document states them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi import converter
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from flowdb.database.interface import ensure_schema
from flowdb.database.target import Database
from flowdb.settings import Settings

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 50
SHARDS = 3
#: The longest ``maxLength`` schemathesis may still fold into a ``pattern`` (see above).
LONGEST_FOLDED = 1_000


@pytest.fixture(autouse=True)
def _short_bounds_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schemathesis folds ``maxLength`` into ``pattern`` only up to ``LONGEST_FOLDED``."""
    fold = converter.update_pattern_in_schema  # fails here if schemathesis renames it

    def fold_short_bounds(schema: dict[str, Any]) -> None:
        if (schema.get("maxLength") or 0) <= LONGEST_FOLDED:
            fold(schema)

    monkeypatch.setattr(converter, "update_pattern_in_schema", fold_short_bounds)


@pytest.fixture
def apps(sqlite_url: str, postgres_url: str, mariadb_url: str) -> Iterator[dict[str, FastAPI]]:
    """The API on a database at head of each dialect (admin routes off: see the test)."""
    from flowdb.server.app import create_app

    urls = {"sqlite": sqlite_url, "postgresql": postgres_url, "mariadb": mariadb_url}
    built = {}
    for dialect, url in urls.items():
        chosen = Settings(database_url=url)
        ensure_schema(Database.from_settings(chosen))
        built[dialect] = create_app(chosen)
    yield built
    for app in built.values():
        asyncio.run(app.state.database.dispose())


@pytest.mark.parametrize("shard", range(SHARDS))
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_and_responses_match_the_document(
    apps: dict[str, FastAPI], mode: GenerationMode, shard: int
) -> None:
    """Admin routes stay off: a fuzzer must not drop the tables the others need."""
    documents = {dialect: app.openapi() for dialect, app in apps.items()}
    assert documents["sqlite"] == documents["postgresql"] == documents["mariadb"]
    schema = schemathesis.openapi.from_asgi("/openapi.json", apps["sqlite"])
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations[shard::SHARDS]:
        takes_input = any(
            len(part) for part in (operation.path_parameters, operation.query, operation.body)
        )
        if mode == GenerationMode.NEGATIVE and not takes_input:
            continue  # nothing to make invalid (health, ready, admin actions)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            for dialect, app in apps.items():
                try:
                    case.call_and_validate(checks=CHECKS, app=app)
                except Exception as failure:
                    failure.add_note(f"(the API on {dialect})")
                    raise

        call()

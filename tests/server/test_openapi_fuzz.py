"""Property-based requests from the API's own OpenAPI document (schemathesis).

Every operation is called with generated valid and invalid inputs, on SQLite and on
PostgreSQL. No response may be a 500, and every response must match what the
document declares (status code, content type, body schema): the document is the
contract clients are generated from.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from flowdb.database.interface import ensure_schema

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 50


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_and_responses_match_the_document(
    configured: str, mode: GenerationMode
) -> None:
    """Admin routes stay off: a fuzzer must not drop the tables the others need."""
    from flowdb.server.app import create_app

    ensure_schema()
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:
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
            case.call_and_validate(checks=CHECKS)

        call()

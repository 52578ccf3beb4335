"""``FLOWDB_LOG_FORMAT=json`` on a real server process: every line on stderr is a JSON
object; each request has one with its id, method, route, status and latency; the server
says which database it serves, never with its password."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from typing import Any

import pytest

from tests import web
from tests.server.test_start import free_port, start_server, wait_until_ready

PASSWORD = "pw-Secret-77"


def with_password(url: str) -> str:
    """``url`` with a password (PostgreSQL here trusts local users, so any password works)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{PASSWORD}@{host}"


def parsed(stderr: str) -> list[dict[str, Any]]:
    """Every line of ``stderr`` as a JSON object (the test fails on the first that is not)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}\n--- all of stderr:\n{stderr}")
        assert isinstance(record, dict), line
        for key in ("time", "level", "logger", "message"):
            assert key in record, f"{key} missing from {line}"
        records.append(record)
    return records


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_server_logs_json_lines_with_each_request(
    dialect: str, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue(f"{'postgres' if dialect == 'postgresql' else 'sqlite'}_url"))
    if dialect == "postgresql":
        url = with_password(url)
    port = free_port()
    server = start_server(url, port, FLOWDB_LOG_FORMAT="json")
    try:
        wait_until_ready(port, server)
        base = f"http://127.0.0.1:{port}"
        created = web.post(
            f"{base}/api/flows", json={"name": "logged"}, headers={"X-Request-ID": "req-one"}
        )
        assert created.status_code == 201
        assert created.headers["x-request-id"] == "req-one"
        flow_id = created.json()["id"]
        read = web.get(f"{base}/api/flows/{flow_id}")
        assert read.status_code == 200
        missing = web.get(f"{base}/api/flows/{uuid.uuid4()}", headers={"X-Request-ID": "req-404"})
        assert missing.status_code == 404
    finally:
        server.send_signal(signal.SIGINT)
        try:
            _, stderr = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            _, stderr = server.communicate()

    assert PASSWORD not in stderr
    records = parsed(stderr)
    access = {r.get("request_id"): r for r in records if r["logger"] == "flowdb.server.access"}
    posted = access["req-one"]
    assert (posted["method"], posted["route"], posted["status"]) == ("POST", "/api/flows", 201)
    assert isinstance(posted["latency_ms"], int | float) and posted["latency_ms"] > 0
    assert posted["level"] == "info"
    assert access["req-404"]["route"] == "/api/flows/{flow_id}"
    assert access["req-404"]["status"] == 404
    generated = access[read.headers["x-request-id"]]
    assert generated["status"] == 200 and len(generated["request_id"]) == 32
    # uvicorn's access lines are replaced, its other lines are JSON too.
    assert not [r for r in records if r["logger"] == "uvicorn.access"]
    assert [r for r in records if r["logger"].startswith("uvicorn")]
    serving = [r for r in records if str(r["message"]).startswith("Serving ")]
    assert len(serving) == 1, records
    if dialect == "postgresql":
        assert "***" in serving[0]["message"]

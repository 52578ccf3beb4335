"""What a request meets before its route: the body-size limit (413, never a huge body
in memory), unknown query parameters (422 naming them), and bodies that cannot be
decoded (400 in flowdb's words); every refusal in flowdb's error shape."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from flowdb.settings import Settings
from tests.server.test_credentials import operations
from tests.server.test_routes import log_line, make_flow, make_run
from tests.server.test_start import free_port, start_server, wait_until_ready

LIMIT_MESSAGE = "The request body is larger than {limit} bytes"


def post_json(api: TestClient, path: str, body: bytes) -> Any:
    return api.post(path, content=body, headers={"content-type": "application/json"})


# --- the body-size limit -----------------------------------------------------------------


def test_the_default_limit_takes_a_full_log_batch_and_refuses_one_byte_more(
    api: TestClient,
) -> None:
    limit = Settings().server_max_body_bytes
    run = make_run(api, make_flow(api)["id"])
    lines = [log_line(run["id"], n % 60) for n in range(1000)]
    overhead = len(json.dumps(lines).encode())
    room = (limit - overhead) // 1000
    for line in lines:
        line["message"] = "x" * room
    lines[0]["message"] += "x" * (limit - len(json.dumps(lines).encode()))
    body = json.dumps(lines).encode()
    assert len(body) == limit
    stored = post_json(api, "/api/logs", body)
    assert stored.status_code == 201, stored.text[:300]
    assert stored.json() == {"count": 1000}

    lines[0]["message"] += "x"
    too_large = json.dumps(lines).encode()
    assert len(too_large) == limit + 1
    refused = post_json(api, "/api/logs", too_large)
    assert refused.status_code == 413
    assert refused.json() == {
        "detail": LIMIT_MESSAGE.format(limit=limit)
        + "; send less per request or raise FLOWDB_SERVER_MAX_BODY_BYTES."
    }
    counted = api.get("/api/logs", params={"flow_run_id": run["id"], "limit": 200, "offset": 900})
    assert len(counted.json()) == 100  # the first batch only


def call(app: Any, scope: dict[str, Any], chunks: Any) -> tuple[list[Message], int]:
    """Run one request through the ASGI app; the messages sent and the chunks it pulled."""
    sent: list[Message] = []
    pulled = 0

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        return next(chunks)

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent, pulled


def http_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 4200),
    }


def endless(size: int) -> Any:
    while True:
        yield {"type": "http.request", "body": b" " * size, "more_body": True}


def answer(sent: list[Message]) -> tuple[int, dict[str, Any]]:
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return start["status"], json.loads(body)


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowdb.server.app import create_app

    monkeypatch.setenv("FLOWDB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("FLOWDB_SERVER_MAX_BODY_BYTES", str(64 * 1024))
    app = create_app()
    for path in ("/api/logs", "/api/flows", "/api/flow_runs/" + str(uuid.uuid4()) + "/set_state"):
        sent, pulled = call(app, http_scope(path, []), endless(16 * 1024))
        status, body = answer(sent)
        assert status == 413, body
        assert body["detail"].startswith(LIMIT_MESSAGE.format(limit=64 * 1024))
        assert pulled == 5  # 4 chunks reach the limit; the 5th passes it; no more is read


def test_a_declared_length_over_the_limit_is_refused_before_any_body_is_read(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowdb.server.app import create_app

    monkeypatch.setenv("FLOWDB_DATABASE_URL", sqlite_url)
    app = create_app()
    scope = http_scope("/api/logs", [(b"content-length", b"300000000")])
    sent, pulled = call(app, scope, endless(1))
    status, body = answer(sent)
    assert (status, pulled) == (413, 0)
    assert body["detail"].startswith(LIMIT_MESSAGE.format(limit=8 * 1024 * 1024))
    assert (b"connection", b"close") in sent[0]["headers"]


def test_credentials_are_checked_before_any_body_is_read(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowdb.server.app import create_app

    monkeypatch.setenv("FLOWDB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("FLOWDB_SERVER_API_AUTH", "bearer:tok_1")
    app = create_app()
    for length in (b"300000000", b"10"):
        scope = http_scope("/api/logs", [(b"content-length", length)])
        sent, pulled = call(app, scope, endless(1))
        status, body = answer(sent)
        assert (status, pulled) == (401, 0), body
        assert body["detail"].startswith("This API requires credentials")
    scope = http_scope("/api/logs", [(b"authorization", b"Bearer tok_1")])
    sent, pulled = call(app, scope, endless(16 * 1024))
    assert answer(sent)[0] == 413 and pulled == 513  # 8 MiB in 16 KiB chunks, plus one


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def read_answer(connection: socket.socket, timeout: float = 30) -> bytes:
    connection.settimeout(timeout)
    received = b""
    while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def test_a_real_server_refuses_300_mb_without_holding_it(sqlite_url: str) -> None:
    """uvicorn in front: a declared 300 MB is refused before its body is sent; a chunked
    body is cut off after the limit; the server's peak memory stays near its start."""
    port = free_port()
    process = start_server(sqlite_url, port, "--log-level", "warning")
    try:
        wait_until_ready(port, process)
        before = peak_rss_mib(process.pid)
        head = b"POST /api/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"

        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.sendall(head + b"Content-Length: 300000000\r\n\r\n")
            declared = read_answer(connection)
        assert declared.startswith(b"HTTP/1.1 413 "), declared[:200]
        assert b'"detail":"The request body is larger than 8388608 bytes' in declared

        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"100000\r\n" + b" " * 0x100000 + b"\r\n"  # 1 MiB
            try:
                while sent < 300 * 2**20:
                    if select.select([connection], [], [], 0)[0]:
                        break  # the server answered
                    connection.sendall(chunk)
                    sent += 0x100000
            except (BrokenPipeError, ConnectionResetError):
                pass
            chunked = read_answer(connection)
        assert chunked.startswith(b"HTTP/1.1 413 "), chunked[:200]
        assert sent < 100 * 2**20, f"{sent} bytes went out before the refusal"
        peak = peak_rss_mib(process.pid)
        assert peak - before < 100, f"peak RSS grew from {before:.0f} to {peak:.0f} MiB"
        print(f"peak RSS {before:.0f} -> {peak:.0f} MiB; {sent / 2**20:.0f} MiB sent chunked")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.communicate()


# --- unknown query parameters ------------------------------------------------------------


def test_a_misspelt_filter_is_a_422_naming_it(api: TestClient) -> None:
    flow = make_flow(api, "nightly")
    make_flow(api, "hourly")
    make_run(api, flow["id"])

    response = api.get("/api/flows", params={"nme_contains": "night"})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["query", "nme_contains"],
                "msg": "Unknown query parameter 'nme_contains'; this route accepts: "
                "limit, name_contains, offset.",
                "type": "unknown_query_parameter",
            }
        ]
    }
    both = api.get("/api/flow_runs", params={"flowid": flow["id"], "states": "RUNNING"})
    assert both.status_code == 422
    assert [error["loc"] for error in both.json()["detail"]] == [
        ["query", "flowid"],
        ["query", "states"],
    ]
    named = api.get("/api/flows", params={"name_contains": "NIGHT", "limit": 5})
    assert [item["name"] for item in named.json()] == ["nightly"]
    runs = api.get(
        "/api/flow_runs",
        params=[("flow_id", flow["id"]), ("state_type", "RUNNING"), ("state_type", "PENDING")],
    )
    assert runs.status_code == 200 and runs.json() == []


def test_every_route_refuses_a_parameter_it_does_not_declare(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Driven by the document, so a new route is checked too; admin routes are on, and
    the refusal comes before they act (the tables are still there afterwards)."""
    from flowdb.server.app import create_app

    monkeypatch.setenv("FLOWDB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("FLOWDB_SERVER_ADMIN_ROUTES", "true")
    with TestClient(create_app(), raise_server_exceptions=False) as api:
        document = api.get("/openapi.json").json()
        checked = 0
        for method, path in operations(document):
            response = api.request(method, path, params={"no_such": "1"})
            assert response.status_code == 422, (method, path, response.text)
            assert response.json()["detail"][0]["loc"] == ["query", "no_such"], path
            checked += 1
        assert checked >= 20
        for path, methods in document["paths"].items():
            for operation in methods.values():
                assert "422" in operation["responses"], path
                if "requestBody" in operation:
                    assert "413" in operation["responses"], path
        assert api.get("/api/ready").json()["status"] == "ready"
        assert api.head("/api/health", params={"no_such": "1"}).status_code == 422


# --- bodies that cannot be decoded -------------------------------------------------------

UNDECODABLE = [
    (b'{"name": "\xff"}', "The body is not valid UTF-8 (byte 0xff at offset 10)."),
    (b'{"name": "caf\xc3"}', "The body is not valid UTF-8 (byte 0xc3 at offset 13)."),
    (b"\xff\xfe{", "The body is not valid UTF-8 (nor the UTF-16-LE its first bytes suggest)."),
    (b'{"name": ', "The body is not valid JSON (Expecting value)."),
    (b"[" * 100_000, "The body is not valid JSON (it is nested too deeply)."),
]


@pytest.mark.parametrize(("body", "detail"), UNDECODABLE)
def test_an_undecodable_body_is_a_400_in_flowdbs_words_on_every_body_route(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, body: bytes, detail: str
) -> None:
    from flowdb.server.app import create_app

    monkeypatch.setenv("FLOWDB_DATABASE_URL", sqlite_url)
    with TestClient(create_app(), raise_server_exceptions=False) as api:
        document = api.get("/openapi.json").json()
        posted = 0
        for method, path in operations(document):
            if method != "POST" or "admin" in path:
                continue
            response = post_json(api, path, body)
            assert response.status_code == 400, (path, response.text)
            assert response.json() == {"detail": detail}, path
            posted += 1
        assert posted == 6
        assert api.get("/api/flows").json() == []


def test_an_undecodable_body_stores_nothing_on_any_dialect(api: TestClient) -> None:
    run = make_run(api, make_flow(api)["id"])
    line = json.dumps([log_line(run["id"], 1)]).encode().replace(b"line 1", b"line \xe9")
    response = post_json(api, "/api/logs", line)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("The body is not valid UTF-8 (byte 0xe9")
    assert api.get("/api/logs", params={"flow_run_id": run["id"]}).json() == []

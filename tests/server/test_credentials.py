"""``FLOWDB_SERVER_API_AUTH``: every route but the probes requires the credentials; a
refusal is a 401 in flowdb's shape; the secret is never shown; an API reachable from
other machines without credentials is warned about when the server starts."""

from __future__ import annotations

import base64
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from flowdb.cli.server import loopback_only
from flowdb.errors import ConfigurationError
from flowdb.settings import get_settings
from tests import web
from tests.server.test_start import free_port, start_server, wait_until_ready

PASSWORD = "s3cret-Pässword"
BASIC = f"basic:ada:{PASSWORD}"
TOKEN = "tok_9f8e7d6c5b4a"


def basic(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


@contextmanager
def served(monkeypatch: pytest.MonkeyPatch, auth: str | None) -> Iterator[TestClient]:
    """The API on FLOWDB_DATABASE_URL (set by the caller), with ``auth`` as the setting."""
    from flowdb.server.app import create_app

    if auth is not None:
        monkeypatch.setenv("FLOWDB_SERVER_API_AUTH", auth)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(method, path with every path parameter filled) for each documented operation."""
    for path, methods in document["paths"].items():
        concrete = path
        while "{" in concrete:
            start, end = concrete.index("{"), concrete.index("}")
            concrete = concrete[:start] + str(uuid.uuid4()) + concrete[end + 1 :]
        for method in methods:
            yield method.upper(), concrete


def assert_refused(response: httpx.Response, challenge: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith(challenge)
    body = response.json()
    assert list(body) == ["detail"] and isinstance(body["detail"], str)


def test_basic_credentials_guard_every_route_but_the_probes(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = basic("ada", PASSWORD)
    with served(monkeypatch, BASIC) as api:
        document = api.get("/openapi.json", headers=good).json()
        refused = 0
        for method, path in operations(document):
            response = api.request(method, path)
            if path in ("/api/health", "/api/ready"):
                assert response.status_code == 200, (path, response.text)
                continue
            assert_refused(response, 'Basic realm="flowdb"')
            refused += 1
        assert refused >= 15
        for extra in ("/openapi.json", "/docs", "/api/no_such_route"):
            assert_refused(api.get(extra), "Basic")

        missing = api.get("/api/flows")
        assert "requires credentials" in missing.json()["detail"]
        wrongs: list[dict[str, Any]] = [
            basic("ada", "wr0ng-Zq9"),
            basic("bob", PASSWORD),
            basic("ada", PASSWORD + "x"),
            {"Authorization": "Basic not-base64!"},
            {"Authorization": f"Bearer {PASSWORD}".encode()},
        ]
        for wrong in wrongs:
            response = api.post("/api/flows", json={"name": "etl"}, headers=wrong)
            assert_refused(response, "Basic")
            assert PASSWORD not in response.text
            assert response.json()["detail"] == (
                "The credentials in the Authorization header are not accepted."
            )
        assert api.get("/api/flows", headers=good).json() == []  # nothing was stored

        created = api.post("/api/flows", json={"name": "etl"}, headers=good)
        assert created.status_code == 201, created.text
        lowercase = {"Authorization": good["Authorization"].replace("Basic", "basic")}
        listed = api.get("/api/flows", headers=lowercase)
        assert [flow["name"] for flow in listed.json()] == ["etl"]
        assert api.head("/api/health/").status_code == 200


def test_a_bearer_token_is_compared_whole(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWDB_DATABASE_URL", sqlite_url)
    with served(monkeypatch, f"bearer:{TOKEN}") as api:
        assert_refused(api.get("/api/flows"), 'Bearer realm="flowdb"')
        for wrong in (TOKEN[:-1], TOKEN + "0", TOKEN.upper(), ""):
            assert_refused(api.get("/api/flows", headers={"Authorization": f"Bearer {wrong}"}), "")
        assert_refused(api.get("/api/flows", headers=basic("ada", TOKEN)), "Bearer")
        response = api.get("/api/flows", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text


def test_without_the_setting_the_api_is_open_and_documents_no_scheme(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWDB_DATABASE_URL", sqlite_url)
    with served(monkeypatch, None) as api:
        assert api.get("/api/flows").status_code == 200
        document = api.get("/openapi.json").json()
    assert "securitySchemes" not in document.get("components", {})
    for methods in document["paths"].values():
        for operation in methods.values():
            assert "security" not in operation
            assert "401" not in operation["responses"]


@pytest.mark.parametrize(("auth", "scheme"), [(BASIC, "basic"), (f"bearer:{TOKEN}", "bearer")])
def test_the_document_declares_the_scheme_when_set(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, auth: str, scheme: str
) -> None:
    monkeypatch.setenv("FLOWDB_DATABASE_URL", sqlite_url)
    headers = basic("ada", PASSWORD) if scheme == "basic" else {"Authorization": f"Bearer {TOKEN}"}
    with served(monkeypatch, auth) as api:
        document = api.get("/openapi.json", headers=headers).json()
    name = f"{scheme}Auth"
    assert document["components"]["securitySchemes"] == {name: {"type": "http", "scheme": scheme}}
    for path, methods in document["paths"].items():
        for operation in methods.values():
            if path in ("/api/health", "/api/ready"):
                assert operation["security"] == []
                assert "401" not in operation["responses"]
            else:
                assert operation["security"] == [{name: []}]
                assert "401" in operation["responses"]
    assert PASSWORD not in str(document) and TOKEN not in str(document)


@pytest.mark.parametrize(
    ("value", "hidden"),
    [
        ("basic:ada", "ada"),
        ("basic::hunter2", "hunter2"),
        ("basic:ada:", "ada"),
        ("token:hunter2", "hunter2"),
        ("bearer:hunter 2", "hunter"),
        ("bearer:", None),
        ("hunter2", "hunter2"),
    ],
)
def test_a_malformed_setting_is_one_line_that_never_quotes_it(
    monkeypatch: pytest.MonkeyPatch, value: str, hidden: str | None
) -> None:
    monkeypatch.setenv("FLOWDB_SERVER_API_AUTH", value)
    with pytest.raises(ConfigurationError) as caught:
        get_settings()
    message = str(caught.value)
    assert message.startswith("FLOWDB_SERVER_API_AUTH is invalid (")
    assert "'basic:<user>:<password>' or 'bearer:<token>'" in message
    assert "\n" not in message
    if hidden is not None:
        assert hidden not in message
    assert caught.value.exit_code == 2


def test_the_settings_never_show_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWDB_SERVER_API_AUTH", BASIC)
    settings = get_settings()
    credentials = settings.api_credentials()
    assert credentials is not None and credentials.secret == f"ada:{PASSWORD}"
    for shown in (repr(settings), str(settings), repr(credentials)):
        assert PASSWORD not in shown


def test_only_loopback_addresses_count_as_this_machine() -> None:
    assert loopback_only("127.0.0.1") and loopback_only("localhost") and loopback_only("::1")
    assert loopback_only("127.0.0.2")
    for beyond in ("0.0.0.0", "::", "", "192.0.2.7", "no-such-host.invalid"):
        assert not loopback_only(beyond), beyond


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def test_start_warns_about_an_open_api_beyond_loopback_and_never_logs_the_secret(
    sqlite_url: str,
) -> None:
    port = free_port()
    process = start_server(sqlite_url, port, "--host", "0.0.0.0")
    try:
        wait_until_ready(port, process)
    finally:
        _, stderr = stop(process)
    warnings = [line for line in stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1, stderr
    assert f"0.0.0.0:{port}" in warnings[0] and "FLOWDB_SERVER_API_AUTH" in warnings[0]

    port = free_port()
    process = start_server(
        sqlite_url, port, "--host", "0.0.0.0", "--log-level", "debug", FLOWDB_SERVER_API_AUTH=BASIC
    )
    try:
        wait_until_ready(port, process)
        base = f"http://127.0.0.1:{port}"
        for password, status in (("wr0ng-Zq9", 401), (PASSWORD, 200)):
            response = web.get(f"{base}/api/flows", auth=("ada", password), timeout=10)
            assert response.status_code == status
    finally:
        stdout, stderr = stop(process)
    assert "Warning:" not in stderr
    assert "GET /api/flows" in stdout + stderr  # the access log ran, and shows no secret
    encoded = base64.b64encode(f"ada:{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, encoded, "wr0ng-Zq9"):
        assert secret not in stdout + stderr

    port = free_port()
    process = start_server(sqlite_url, port, "--host", "127.0.0.1")
    try:
        wait_until_ready(port, process)
    finally:
        _, stderr = stop(process)
    assert "Warning:" not in stderr

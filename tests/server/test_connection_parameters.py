"""One PostgreSQL URL with ordinary libpq (or asyncpg) parameters serves the CLI and the API."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.cli.helpers import flowdb, ok


@pytest.mark.parametrize(
    "parameters",
    [
        "sslmode=disable&connect_timeout=3&application_name=flowdb-test",
        "ssl=disable&timeout=3",
    ],
)
def test_the_cli_and_every_route_work_with_url_parameters(
    postgres_url: str, parameters: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{postgres_url}?{parameters}"
    ok(flowdb(url, "database", "upgrade", "-y"))
    assert "Status: at head" in ok(flowdb(url, "database", "current")).stdout

    from flowdb.server.app import create_app

    monkeypatch.setenv("FLOWDB_DATABASE_URL", url)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        assert client.get("/api/ready").status_code == 200
        flow = client.post("/api/flows", json={"name": "with-parameters"})
        assert flow.status_code == 201, flow.text
        run = client.post("/api/flow_runs", json={"flow_id": flow.json()["id"]})
        assert run.status_code == 201, run.text
        assert client.get(f"/api/flow_runs/{run.json()['id']}").status_code == 200

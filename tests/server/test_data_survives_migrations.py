"""Data written through the API survives a downgrade and an upgrade by the operator's CLI."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from flowdb.database.history import load_history
from flowdb.server.app import create_app
from tests.cli.helpers import flowdb, ok

#: The revision before the flow run state history existed: downgrading there keeps
#: each run's current state (the older schema holds it on flow_run) and loses the rest.
BEFORE_STATE_HISTORY = "4e2b6f8c1a97"


def write_through_the_api(api: TestClient) -> None:
    flow = api.post("/api/flows", json={"name": "etl", "tags": ["nightly"]}).json()
    for n in range(3):
        run = api.post(
            "/api/flow_runs",
            json={
                "flow_id": flow["id"],
                "name": f"run-{n}",
                "parameters": {"n": n, "nested": {"list": [1, 2.5, None]}},
                "expected_start_time": f"2026-03-0{n + 1}T06:00:00+02:00",
                "state": {"type": "SCHEDULED"},
            },
        ).json()
        api.post(f"/api/flow_runs/{run['id']}/set_state", json={"type": "RUNNING"})
        if n:
            api.post(f"/api/flow_runs/{run['id']}/set_state", json={"type": "COMPLETED"})
        task = api.post(
            "/api/task_runs",
            json={
                "flow_run_id": run["id"],
                "task_key": "extract",
                "dynamic_key": str(n),
                "name": "extract",
            },
        ).json()
        lines = [
            {
                "name": "flow",
                "level": 20,
                "message": f"run {n} line {i}",
                "timestamp": f"2026-03-0{n + 1}T06:00:0{i}Z",
                "flow_run_id": run["id"],
                "task_run_id": task["id"],
            }
            for i in range(4)
        ]
        assert api.post("/api/logs", json=lines).status_code == 201


def read_through_the_api(api: TestClient) -> dict[str, Any]:
    """Everything the API shows, minus what a migration may legitimately renew."""

    def without(rows: list[dict[str, Any]], *fields: str) -> list[dict[str, Any]]:
        return sorted(
            ({k: v for k, v in row.items() if k not in fields} for row in rows),
            key=lambda row: str(row["id"]),
        )

    runs = api.get("/api/flow_runs").json()
    return {
        "flows": without(api.get("/api/flows").json(), "updated"),
        # state_id names a state-history row, which the downgrade folds into the run
        "flow_runs": without(runs, "updated", "state_id"),
        "current_states": sorted(
            (api.get(f"/api/flow_runs/{run['id']}/states").json()[-1]["type"], run["id"])
            for run in runs
        ),
        "task_runs": without(api.get("/api/task_runs").json(), "updated"),
        "logs": without(api.get("/api/logs", params={"limit": 200}).json(), "updated"),
    }


@pytest.mark.parametrize("target", ["-1", BEFORE_STATE_HISTORY])
def test_api_data_survives_downgrade_and_upgrade(configured: str, target: str) -> None:
    with TestClient(create_app()) as api:
        write_through_the_api(api)
        before = read_through_the_api(api)
    assert len(before["logs"]) == 12 and len(before["flow_runs"]) == 3

    ok(flowdb(configured, "database", "downgrade", "-y", "-r", target))
    ok(flowdb(configured, "database", "upgrade", "-y"))

    with TestClient(create_app()) as api:
        after = read_through_the_api(api)
        assert api.get("/api/admin/version").json()["schema_revision"] == load_history().head
    assert after == before

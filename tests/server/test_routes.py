"""The REST API's routes, through HTTP, on SQLite and on the PostgreSQL server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from flowdb.database.history import load_history
from tests.dbtools import sync_engine

T0 = "2026-03-01T12:00:00Z"


def make_flow(api: TestClient, name: str = "etl", **fields: Any) -> dict[str, Any]:
    response = api.post("/api/flows", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def make_run(api: TestClient, flow_id: str, **fields: Any) -> dict[str, Any]:
    response = api.post("/api/flow_runs", json={"flow_id": flow_id, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def log_line(flow_run_id: str, n: int, **fields: Any) -> dict[str, Any]:
    return {
        "name": "flow",
        "level": 20,
        "message": f"line {n}",
        "timestamp": f"2026-03-01T12:00:{n:02d}Z",
        "flow_run_id": flow_run_id,
        **fields,
    }


# --- service -----------------------------------------------------------------------------


def test_health_ready_and_version(api: TestClient) -> None:
    head = load_history().head
    assert api.get("/api/health").json() == {"status": "ok"}
    ready = api.get("/api/ready").json()
    assert ready == {"status": "ready", "schema_revision": head, "head": head, "detail": ""}
    version = api.get("/api/admin/version").json()
    assert version["schema_revision"] == head
    assert version["version"]


def test_not_ready_when_the_schema_is_gone_until_created_again(api: TestClient) -> None:
    make_flow(api)
    assert api.post("/api/admin/database/drop").json() == {
        "action": "drop",
        "schema_revision": None,
    }
    response = api.get("/api/ready")
    assert response.status_code == 503
    assert "flowdb database upgrade" in response.json()["detail"]
    created = api.post("/api/admin/database/create").json()
    assert created["schema_revision"] == load_history().head
    assert api.get("/api/ready").status_code == 200
    assert api.get("/api/flows").json() == []


def test_clear_deletes_rows_and_keeps_the_schema(api: TestClient) -> None:
    run = make_run(api, make_flow(api)["id"], state={"type": "RUNNING"})
    api.post("/api/logs", json=[log_line(run["id"], 1)])
    assert api.post("/api/admin/database/clear").status_code == 200
    assert api.get("/api/flows").json() == []
    assert api.get("/api/flow_runs").json() == []
    assert api.get("/api/logs").json() == []
    assert api.get("/api/ready").status_code == 200
    make_flow(api)  # the schema is still there


def test_admin_routes_are_off_by_default(configured: str) -> None:
    from flowdb.server.app import create_app

    with TestClient(create_app()) as client:
        make_flow(client)
        for action in ("clear", "drop", "create"):
            response = client.post(f"/api/admin/database/{action}")
            assert response.status_code == 403
            assert "FLOWDB_SERVER_ADMIN_ROUTES=true" in response.json()["detail"]
        assert len(client.get("/api/flows").json()) == 1


# --- flows -------------------------------------------------------------------------------


def test_flows_create_read_list(api: TestClient) -> None:
    etl = make_flow(api, "etl", tags=["nightly"])
    assert etl["tags"] == ["nightly"]
    assert api.get(f"/api/flows/{etl['id']}").json() == etl
    for name in ("report", "etl_backfill", "100%_done"):
        make_flow(api, name)
    names = [flow["name"] for flow in api.get("/api/flows").json()]
    assert names == sorted(names) and len(names) == 4
    assert [f["name"] for f in api.get("/api/flows?name_contains=etl").json()] == [
        "etl",
        "etl_backfill",
    ]
    # LIKE wildcards in the search text are literal
    assert [f["name"] for f in api.get("/api/flows", params={"name_contains": "%_"}).json()] == [
        "100%_done"
    ]
    page = api.get("/api/flows?limit=2&offset=1").json()
    assert [f["name"] for f in page] == names[1:3]


def test_duplicate_flow_name_is_a_conflict(api: TestClient) -> None:
    make_flow(api, "etl")
    response = api.post("/api/flows", json={"name": "etl"})
    assert response.status_code == 409
    assert response.json()["detail"] == "A flow named 'etl' exists already."


def test_unknown_ids_are_404_naming_the_id(api: TestClient) -> None:
    missing = uuid.uuid4()
    for path, kind in (
        (f"/api/flows/{missing}", "flow"),
        (f"/api/flow_runs/{missing}", "flow run"),
        (f"/api/flow_runs/{missing}/states", "flow run"),
        (f"/api/task_runs/{missing}", "task run"),
    ):
        response = api.get(path)
        assert response.status_code == 404, path
        assert response.json()["detail"] == f"No {kind} with id {missing}."
    response = api.post("/api/flow_runs", json={"flow_id": str(missing)})
    assert response.status_code == 404
    assert str(missing) in response.json()["detail"]


# --- flow runs and states ----------------------------------------------------------------


def test_flow_run_states_update_the_run_and_its_history(api: TestClient) -> None:
    run = make_run(
        api,
        make_flow(api)["id"],
        parameters={"day": "2026-03-01", "retries": 3},
        state={"type": "SCHEDULED"},
    )
    assert (run["state_type"], run["state_name"], run["run_count"]) == ("SCHEDULED", "Scheduled", 0)
    running = api.post(f"/api/flow_runs/{run['id']}/set_state", json={"type": "RUNNING"})
    assert running.status_code == 201
    done = api.post(
        f"/api/flow_runs/{run['id']}/set_state",
        json={"type": "COMPLETED", "message": "ok", "data": {"rows": 10}},
    ).json()
    current = api.get(f"/api/flow_runs/{run['id']}").json()
    assert current["state_id"] == done["id"]
    assert (current["state_type"], current["state_name"]) == ("COMPLETED", "Completed")
    assert current["run_count"] == 1
    assert current["start_time"] == running.json()["timestamp"]
    assert current["end_time"] == done["timestamp"]
    assert current["parameters"] == {"day": "2026-03-01", "retries": 3}
    history = api.get(f"/api/flow_runs/{run['id']}/states").json()
    assert [state["type"] for state in history] == ["SCHEDULED", "RUNNING", "COMPLETED"]
    assert history[-1]["data"] == {"rows": 10}


def test_idempotency_key_returns_the_existing_run(api: TestClient) -> None:
    flow = make_flow(api)
    first = make_run(api, flow["id"], idempotency_key="2026-03-01")
    body = {"flow_id": flow["id"], "idempotency_key": "2026-03-01"}
    again = api.post("/api/flow_runs", json=body)
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]
    assert len(api.get("/api/flow_runs").json()) == 1


def test_flow_runs_filter_and_paginate(api: TestClient) -> None:
    etl, report = make_flow(api, "etl"), make_flow(api, "report")
    for n in range(5):
        make_run(
            api,
            etl["id"],
            name=f"etl-{n}",
            expected_start_time=f"2026-03-0{n + 1}T00:00:00Z",
            state={"type": "COMPLETED" if n % 2 else "FAILED"},
        )
    make_run(api, report["id"], name="report-0", expected_start_time=T0)

    def names(**params: Any) -> list[str]:
        response = api.get("/api/flow_runs", params=params)
        assert response.status_code == 200, response.text
        return [run["name"] for run in response.json()]

    assert names(flow_id=etl["id"]) == ["etl-4", "etl-3", "etl-2", "etl-1", "etl-0"]
    assert names(flow_id=etl["id"], state_type="FAILED") == ["etl-4", "etl-2", "etl-0"]
    assert names(state_type=["FAILED", "COMPLETED"], limit=2, offset=1) == ["etl-3", "etl-2"]
    assert names(
        expected_start_after="2026-03-02T00:00:00Z", expected_start_before="2026-03-04T00:00:00Z"
    ) == ["etl-2", "etl-1"]


# --- task runs ---------------------------------------------------------------------------


def test_task_runs_create_read_list_and_conflict(api: TestClient) -> None:
    run = make_run(api, make_flow(api)["id"])
    created = []
    for dynamic_key in ("0", "1"):
        response = api.post(
            "/api/task_runs",
            json={
                "flow_run_id": run["id"],
                "task_key": "extract",
                "dynamic_key": dynamic_key,
                "name": "extract",
            },
        )
        assert response.status_code == 201, response.text
        created.append(response.json())
    assert api.get(f"/api/task_runs/{created[0]['id']}").json() == created[0]
    listed = api.get("/api/task_runs", params={"flow_run_id": run["id"]}).json()
    assert {task["dynamic_key"] for task in listed} == {"0", "1"}
    duplicate = api.post(
        "/api/task_runs",
        json={"flow_run_id": run["id"], "task_key": "extract", "dynamic_key": "1", "name": "x"},
    )
    assert duplicate.status_code == 409
    orphan = api.post(
        "/api/task_runs", json={"flow_run_id": str(uuid.uuid4()), "task_key": "k", "name": "n"}
    )
    assert orphan.status_code == 404


# --- logs --------------------------------------------------------------------------------


def test_logs_batch_insert_and_list_in_time_order(api: TestClient) -> None:
    run = make_run(api, make_flow(api)["id"])
    lines = [log_line(run["id"], n, level=10 * (n % 5)) for n in reversed(range(50))]
    response = api.post("/api/logs", json=lines)
    assert response.status_code == 201
    assert response.json() == {"count": 50}
    listed = api.get("/api/logs", params={"flow_run_id": run["id"], "limit": 200}).json()
    assert [line["message"] for line in listed] == [f"line {n}" for n in range(50)]
    errors = api.get("/api/logs", params={"flow_run_id": run["id"], "level_at_least": 40}).json()
    assert {line["level"] for line in errors} == {40} and len(errors) == 10


def test_a_batch_with_an_unknown_run_stores_nothing(api: TestClient) -> None:
    run = make_run(api, make_flow(api)["id"])
    missing = str(uuid.uuid4())
    response = api.post("/api/logs", json=[log_line(run["id"], 1), log_line(missing, 2)])
    assert response.status_code == 404
    assert missing in response.json()["detail"]
    assert api.get("/api/logs").json() == []


def test_a_line_of_a_task_run_only_is_stored_with_its_flow_run(api: TestClient) -> None:
    """Since b2a6d8f0c4e3 every line names its flow run: the server fills it from the task
    run, so listing the flow run's logs finds it; a line with no run at all is a 422."""
    run = make_run(api, make_flow(api)["id"])
    task = api.post(
        "/api/task_runs", json={"flow_run_id": run["id"], "task_key": "t", "name": "t"}
    ).json()
    line = {**log_line(run["id"], 1), "flow_run_id": None, "task_run_id": task["id"]}
    response = api.post("/api/logs", json=[log_line(run["id"], 0), line])
    assert response.status_code == 201, response.text
    listed = api.get("/api/logs", params={"flow_run_id": run["id"]}).json()
    assert [(x["message"], x["flow_run_id"], x["task_run_id"]) for x in listed] == [
        ("line 0", run["id"], None),
        ("line 1", run["id"], task["id"]),
    ]

    nowhere = {**log_line(run["id"], 2), "flow_run_id": None}
    refused = api.post("/api/logs", json=[log_line(run["id"], 3), nowhere])
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", 1, "flow_run_id"]
    assert "belongs to a run" in error["msg"]
    assert len(api.get("/api/logs").json()) == 2  # nothing of the refused batch was stored


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "/api/flows", {"name": ""}, ["body", "name"]),
        ("post", "/api/flows", {"name": "x" * 256}, ["body", "name"]),
        ("post", "/api/flows", {"name": "a\u0000b"}, ["body", "name"]),
        ("post", "/api/flows", {"name": "etl", "colour": "red"}, ["body", "colour"]),
        ("post", "/api/flows", {"name": "etl", "tags": "nightly"}, ["body", "tags"]),
        ("post", "/api/flow_runs", {"flow_id": "not-a-uuid"}, ["body", "flow_id"]),
        ("get", "/api/flows/not-a-uuid", None, ["path", "flow_id"]),
        ("get", "/api/flows?limit=0", None, ["query", "limit"]),
        ("get", "/api/flows?offset=-1", None, ["query", "offset"]),
        ("get", "/api/flow_runs?state_type=SLEEPING", None, ["query", "state_type", 0]),
        ("post", "/api/logs", [], ["body"]),
    ],
)
def test_bad_input_is_422_naming_the_field(
    api: TestClient, method: str, path: str, body: Any, field: list[Any]
) -> None:
    response = api.request(method.upper(), path, json=body)
    assert response.status_code == 422, response.text
    assert field in [error["loc"] for error in response.json()["detail"]]


def test_documents_that_json_cannot_carry_are_422_not_500(api: TestClient) -> None:
    flow = make_flow(api)
    for document in ('{"x": NaN}', '{"x": [Infinity]}', '{"x": "\\u0000"}', '{"\\ud800": 1}'):
        response = api.post(
            "/api/flow_runs",
            content=f'{{"flow_id": "{flow["id"]}", "parameters": {document}}}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 422, (document, response.text)
        assert response.json()["detail"][0]["loc"][:2] == ["body", "parameters"]
    assert api.get("/api/flow_runs").json() == []


def test_too_big_a_log_batch_is_refused(api: TestClient) -> None:
    run = make_run(api, make_flow(api)["id"])
    response = api.post("/api/logs", json=[log_line(run["id"], 1)] * 1001)
    assert response.status_code == 422
    assert api.get("/api/logs").json() == []


def test_concurrent_creates_with_one_idempotency_key_make_one_run(configured: str) -> None:
    """Twelve clients retrying the same creation at once all get the same run."""
    import asyncio

    import httpx

    from flowdb.database.interface import ensure_schema
    from flowdb.server.app import create_app

    ensure_schema()
    app = create_app()

    async def race() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            flow = (await client.post("/api/flows", json={"name": "etl"})).json()
            body = {"flow_id": flow["id"], "idempotency_key": "nightly-2026-03-01"}
            responses = await asyncio.gather(
                *(client.post("/api/flow_runs", json=body) for _ in range(12))
            )
            await app.state.database.dispose()
            return list(responses)

    responses = asyncio.run(race())
    assert sorted(r.status_code for r in responses) == [200] * 11 + [201], [
        r.text for r in responses
    ]
    assert len({r.json()["id"] for r in responses}) == 1


def test_a_503_logs_its_cause_once_without_the_sql(
    api: TestClient, configured: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sync_engine(configured)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE log"))  # stamped at head, a table gone
    finally:
        engine.dispose()
    with caplog.at_level("ERROR", logger="flowdb.server"):
        response = api.get("/api/logs")
    assert response.status_code == 503
    causes = [r.getMessage() for r in caplog.records if "answered 503" in r.getMessage()]
    assert len(causes) == 1, causes
    assert causes[0].startswith("GET /api/logs answered 503: ")
    assert "log" in causes[0].split("answered 503: ", 1)[1]
    assert "SELECT" not in causes[0]
    assert "log" not in response.json()["detail"]  # the client gets flowdb's short sentence

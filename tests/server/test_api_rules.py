"""The rules the API keeps beyond validation: state transitions, references that belong
together, one behaviour on every dialect, and the HTTP conventions clients rely on."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flowdb.server.transitions import readme_table
from tests.server.test_routes import make_flow, make_run

README = Path(__file__).resolve().parents[2] / "README.md"


def set_state(api: TestClient, run_id: str, kind: str, **fields: Any) -> Any:
    return api.post(f"/api/flow_runs/{run_id}/set_state", json={"type": kind, **fields})


def make_task_run(api: TestClient, flow_run_id: str, key: str = "extract") -> dict[str, Any]:
    body = {"flow_run_id": flow_run_id, "task_key": key, "name": key}
    response = api.post("/api/task_runs", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


# --- transitions -------------------------------------------------------------------------


def test_the_readme_shows_the_transition_rules() -> None:
    assert readme_table() in README.read_text(encoding="utf-8")


def test_a_refused_transition_is_a_409_naming_both_states(api: TestClient) -> None:
    run = make_run(api, make_flow(api)["id"], state={"type": "SCHEDULED"})
    assert set_state(api, run["id"], "RUNNING").status_code == 201
    assert set_state(api, run["id"], "COMPLETED").status_code == 201
    for refused in ("RUNNING", "SCHEDULED", "PAUSED", "FAILED"):
        response = set_state(api, run["id"], refused)
        assert response.status_code == 409, response.text
        detail = response.json()["detail"]
        assert f"The flow run {run['id']} is COMPLETED; it cannot move to {refused}" in detail
        assert "force=true" in detail
    history = api.get(f"/api/flow_runs/{run['id']}/states").json()
    assert [state["type"] for state in history] == ["SCHEDULED", "RUNNING", "COMPLETED"]


def test_force_skips_the_rules_and_keeps_the_invariants(api: TestClient) -> None:
    run = make_run(api, make_flow(api)["id"], state={"type": "SCHEDULED"})
    first = set_state(api, run["id"], "RUNNING").json()
    done = set_state(api, run["id"], "COMPLETED").json()
    again = set_state(api, run["id"], "RUNNING", force=True)
    assert again.status_code == 201, again.text
    current = api.get(f"/api/flow_runs/{run['id']}").json()
    assert current["run_count"] == 2
    assert current["start_time"] == first["timestamp"]
    assert current["end_time"] == done["timestamp"]
    assert current["state_type"] == "RUNNING"
    assert again.json()["timestamp"] > done["timestamp"]


def test_a_client_timestamp_never_reorders_the_history(api: TestClient) -> None:
    run = make_run(api, make_flow(api)["id"], state={"type": "SCHEDULED"})
    backdated = set_state(api, run["id"], "RUNNING", timestamp="2001-01-01T00:00:00Z").json()
    assert backdated["timestamp"] > run["state_timestamp"]
    history = api.get(f"/api/flow_runs/{run['id']}/states").json()
    assert [state["type"] for state in history] == ["SCHEDULED", "RUNNING"]
    assert api.get(f"/api/flow_runs/{run['id']}").json()["state_id"] == backdated["id"]


def test_task_runs_move_through_states_by_the_same_rules(api: TestClient) -> None:
    task = make_task_run(api, make_run(api, make_flow(api)["id"])["id"])
    path = f"/api/task_runs/{task['id']}"
    for kind in ("PENDING", "RUNNING", "FAILED", "SCHEDULED", "RUNNING", "COMPLETED"):
        response = api.post(f"{path}/set_state", json={"type": kind})
        assert response.status_code == 201, (kind, response.text)
    refused = api.post(f"{path}/set_state", json={"type": "RUNNING"})
    assert refused.status_code == 409
    assert f"The task run {task['id']} is COMPLETED" in refused.json()["detail"]
    history = api.get(f"{path}/states").json()
    current = api.get(path).json()
    assert current["state_id"] == history[-1]["id"]
    assert current["run_count"] == 2
    assert current["start_time"] == history[1]["timestamp"]
    assert current["end_time"] == history[-1]["timestamp"]
    missing = uuid.uuid4()
    response = api.post(f"/api/task_runs/{missing}/set_state", json={"type": "RUNNING"})
    assert response.status_code == 404
    assert response.json()["detail"] == f"No task run with id {missing}."


# --- references --------------------------------------------------------------------------


def test_a_log_naming_a_task_run_of_another_flow_run_is_422_naming_both(api: TestClient) -> None:
    flow = make_flow(api)
    mine, other = make_run(api, flow["id"]), make_run(api, flow["id"])
    task = make_task_run(api, other["id"])
    line = {
        "name": "flow",
        "level": 20,
        "message": "hello",
        "timestamp": "2026-03-01T12:00:00Z",
        "flow_run_id": mine["id"],
        "task_run_id": task["id"],
    }
    good = {**line, "flow_run_id": other["id"]}
    response = api.post("/api/logs", json=[good, line])
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", 1, "task_run_id"]
    assert task["id"] in error["msg"] and mine["id"] in error["msg"] and other["id"] in error["msg"]
    assert api.get("/api/logs").json() == []
    assert api.post("/api/logs", json=[good]).status_code == 201


# --- HTTP conventions --------------------------------------------------------------------


def test_collections_answer_with_a_trailing_slash(api: TestClient) -> None:
    created = api.post("/api/flows/", json={"name": "etl"}, follow_redirects=False)
    assert created.status_code == 201
    listed = api.get("/api/flows/", follow_redirects=False)
    assert listed.status_code == 200
    assert [flow["name"] for flow in listed.json()] == ["etl"]


def test_head_works_where_get_does(api: TestClient) -> None:
    make_flow(api)
    for path in ("/api/health", "/api/ready", "/api/flows", "/api/flows/"):
        get, head = api.get(path), api.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-length"] == get.headers["content-length"]


def test_a_405_lists_every_method_of_the_path(api: TestClient) -> None:
    for method in ("PUT", "OPTIONS", "DELETE"):
        response = api.request(method, "/api/flows")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD, POST"
    response = api.request("POST", "/api/health")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


def test_a_body_that_is_not_json_is_400(api: TestClient) -> None:
    response = api.post(
        "/api/flows", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("The body is not valid JSON")


# --- one behaviour on every dialect --------------------------------------------------------

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
DOCUMENT = {
    "big": 1e308,
    "tiny": 5e-324,
    "third": 1 / 3,
    "whole": 2.0,
    "huge_int": 123456789012345678901234567890,
    "nested": {"list": [0.1, -0.0, 1e-7, "Ünïcode"], "flag": True, "none": None},
}


def scenario(api: TestClient) -> list[tuple[int, Any]]:
    """A sequence of calls whose answers must not depend on the dialect."""
    answers: list[tuple[int, Any]] = []

    def call(method: str, path: str, body: Any = None) -> Any:
        response = api.request(method, path, json=body)
        answers.append((response.status_code, response.json()))
        return response.json()

    flows = [call("POST", "/api/flows", {"name": n}) for n in ("ETL nightly", "etl-2", "Report")]
    call("POST", "/api/flows", {"name": "ETL nightly"})
    call("GET", "/api/flows?name_contains=etl")
    call("GET", "/api/flows?name_contains=REPORT")
    call("GET", "/api/flows?name_contains=%25")
    run = call("POST", "/api/flow_runs", {"flow_id": flows[0]["id"], "parameters": DOCUMENT})
    call("GET", f"/api/flow_runs/{run['id']}")
    for kind in ("SCHEDULED", "RUNNING", "PAUSED", "RUNNING", "COMPLETED", "RUNNING"):
        call("POST", f"/api/flow_runs/{run['id']}/set_state", {"type": kind, "data": DOCUMENT})
    call("GET", f"/api/flow_runs/{run['id']}/states")
    task = call("POST", "/api/task_runs", {"flow_run_id": run["id"], "task_key": "t", "name": "t"})
    call("POST", "/api/task_runs", {"flow_run_id": run["id"], "task_key": "t", "name": "t"})
    other = call("POST", "/api/flow_runs", {"flow_id": flows[1]["id"]})
    line = {"name": "x", "level": 1, "message": "m", "timestamp": "2026-01-01T00:00:00Z"}
    call("POST", "/api/logs", [{**line, "flow_run_id": other["id"], "task_run_id": task["id"]}])
    call("GET", f"/api/flow_runs/{uuid.UUID(int=7)}")
    return answers


def normalised(answers: list[tuple[int, Any]]) -> str:
    """The answers as text with ids numbered by first appearance and times replaced."""
    text = json.dumps(answers, sort_keys=True)
    ids: dict[str, str] = {}
    text = UUID.sub(lambda m: ids.setdefault(m[0], f"<id {len(ids)}>"), text)
    text = re.sub(r"run-[0-9a-f]{8}", "run-<hex>", text)
    return TIME.sub("<time>", text)


def test_the_same_scenario_gives_the_same_answers_on_both_dialects(
    sqlite_url: str, postgres_url: str
) -> None:
    from flowdb.server.app import create_app
    from flowdb.settings import Settings

    results = []
    for url in (sqlite_url, postgres_url):
        with TestClient(create_app(Settings(database_url=url))) as client:
            results.append(normalised(scenario(client)))
    assert results[0] == results[1]
    answers = json.loads(results[0])
    assert [flow["name"] for flow in answers[4][1]] == ["ETL nightly", "etl-2"]
    assert [flow["name"] for flow in answers[5][1]] == ["Report"]
    assert answers[6][1] == []
    assert answers[8][1]["parameters"] == DOCUMENT  # -0.0 == 0.0, stored as 0.0 everywhere
    assert answers[3] == [409, {"detail": "A flow named 'ETL nightly' exists already."}]
    assert [status for status, _ in answers[9:15]] == [201, 201, 201, 201, 201, 409]


@pytest.mark.parametrize("path", ["/api/flow_runs/{id}", "/api/flow_runs/{id}/states"])
def test_json_documents_come_back_as_stored(api: TestClient, path: str) -> None:
    run = make_run(api, make_flow(api)["id"], parameters=DOCUMENT)
    set_state(api, run["id"], "SCHEDULED", data=DOCUMENT)
    body = api.get(path.format(id=run["id"])).json()
    stored = body["parameters"] if isinstance(body, dict) else body[-1]["data"]
    assert stored == DOCUMENT
    assert isinstance(stored["big"], float) and isinstance(stored["whole"], float)


# --- failures ------------------------------------------------------------------------------


def test_a_query_timeout_is_a_503_naming_the_server_setting_not_the_url(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A set_state that waits for a run another session holds locked runs out of time."""
    import sqlalchemy as sa

    from flowdb.server.app import create_app
    from tests.dbtools import sync_engine

    monkeypatch.setenv("FLOWDB_DATABASE_URL", postgres_url)
    monkeypatch.setenv("FLOWDB_SERVER_QUERY_TIMEOUT", "0.5")
    with TestClient(create_app()) as api:
        run = make_run(api, make_flow(api)["id"])
        engine = sync_engine(postgres_url)
        try:
            with engine.begin() as holder:
                holder.execute(
                    sa.text("SELECT id FROM flow_run WHERE id = :id FOR UPDATE"),
                    {"id": uuid.UUID(run["id"])},
                )
                response = set_state(api, run["id"], "RUNNING")
        finally:
            engine.dispose()
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert "FLOWDB_SERVER_QUERY_TIMEOUT (0.5 s)" in detail
        assert "MIGRATION" not in detail
        assert "postgres" not in detail and "127.0.0.1" not in detail
        assert set_state(api, run["id"], "RUNNING").status_code == 201


# --- the OpenAPI document tells the truth ----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/flow_runs", {"expected_start_time": 0}),
        ("/api/flow_runs", {"expected_start_time": "1969-12-31T23:59:59Z"}),
        ("/api/flow_runs", {"expected_start_time": "9000-01-01T00:00:00Z"}),
        ("/api/flow_runs", {"expected_start_time": "2026-03-01T12:00:00"}),  # no zone
        ("/api/flow_runs", {"expected_start_time": "2026-03-01"}),
        ("/api/logs", {"level": True}),
        ("/api/logs", {"level": "20"}),
        ("/api/logs", {"level": 20.5}),
        ("/api/logs", {"timestamp": 0}),
    ],
)
def test_what_the_schema_forbids_is_refused(api: TestClient, path: str, body: Any) -> None:
    run = make_run(api, make_flow(api)["id"])
    if path == "/api/logs":
        line = {"name": "n", "level": 20, "message": "m", "timestamp": "2026-03-01T12:00:00Z"}
        response = api.post(path, json=[{**line, "flow_run_id": run["id"], **body}])
    else:
        response = api.post(path, json={"flow_id": run["flow_id"], **body})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] in body


def test_query_timestamps_are_strings_in_the_documented_form(api: TestClient) -> None:
    for value in ("0.5", "0", "2026-03-01"):
        response = api.get("/api/flow_runs", params={"expected_start_before": value})
        assert response.status_code == 422, value
    ok = api.get("/api/flow_runs", params={"expected_start_before": "2026-03-01T00:00:00+02:00"})
    assert ok.status_code == 200


def test_the_document_states_the_constraints_the_server_enforces(api: TestClient) -> None:
    from flowdb.server.schemas import DATE_TIME, NUL_FREE

    document = api.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert schemas["FlowCreate"]["properties"]["name"]["pattern"] == NUL_FREE
    assert schemas["LogCreate"]["properties"]["timestamp"]["pattern"] == DATE_TIME
    assert schemas["LogCreate"]["properties"]["level"]["type"] == "integer"
    assert schemas["FlowCreate"]["examples"] and schemas["LogCreate"]["examples"]
    operations = {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert operations["post", "/api/flows"]["operationId"] == "create_flow"
    assert operations["post", "/api/flow_runs/{flow_run_id}/set_state"]["operationId"] == (
        "set_flow_run_state"
    )
    for (method, path), operation in operations.items():
        if path != "/api/health":
            assert "503" in operation["responses"], (method, path)
    for path in (
        "/api/flow_runs/{flow_run_id}/set_state",
        "/api/task_runs/{task_run_id}/set_state",
    ):
        assert "409" in operations["post", path]["responses"]

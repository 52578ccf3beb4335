"""Write data into a database with an earlier release of flowdb (run by that release's Python).

Usage: ``python release_writer.py`` with ``FLOWDB_DATABASE_URL`` set, in the virtualenv
of a release (``test_releases.py``). The database is already at that release's head.
A release with a server writes through its API in-process (a flow, a flow run with two
states, a task run, logs); the first release had no server and writes through its
models. Prints what it wrote as JSON: the ids, which the test finds again afterwards.

Imports only what the release has: this file must not import the test suite.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import sys
import uuid
from typing import Any


def through_api() -> dict[str, Any]:
    """Write through the release's REST API (TestClient, in-process)."""
    from fastapi.testclient import TestClient

    from flowdb.server.app import create_app

    with TestClient(create_app()) as client:

        def post(path: str, body: Any) -> Any:
            response = client.post(path, json=body)
            if response.status_code != 201:
                raise SystemExit(f"POST {path}: {response.status_code} {response.text}")
            return response.json()

        flow = post("/api/flows", {"name": "release-flow", "tags": ["release"]})
        run = post(
            "/api/flow_runs",
            {"flow_id": flow["id"], "name": "release-run", "state": {"type": "PENDING"}},
        )
        post(f"/api/flow_runs/{run['id']}/set_state", {"type": "RUNNING"})
        task = post(
            "/api/task_runs",
            {"flow_run_id": run["id"], "task_key": "release-task", "name": "release-task-run"},
        )
        now = dt.datetime.now(dt.UTC).isoformat()
        post(
            "/api/logs",
            [
                {"name": "release", "level": 20, "message": f"log {n}", "timestamp": now}
                | {"flow_run_id": run["id"], "task_run_id": task["id"]}
                for n in range(3)
            ],
        )
    return {"flow": flow["id"], "flow_run": run["id"], "task_run": task["id"], "logs": 3}


def through_models() -> dict[str, Any]:
    """Write through the release's models (a release without a server)."""
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from flowdb.database import orm_models as orm

    engine = sa.create_engine(os.environ["FLOWDB_DATABASE_URL"])
    now = dt.datetime.now(dt.UTC)
    flow_id, run_id, task_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with Session(engine) as session, session.begin():
        session.add(orm.Flow(id=flow_id, name="release-flow", tags=["release"]))
        session.flush()
        session.add(
            orm.FlowRun(
                id=run_id,
                flow_id=flow_id,
                name="release-run",
                expected_start_time=now,
                state_type=orm.StateType.RUNNING,
                state_name="Running",
            )
        )
        session.flush()
        for kind in (orm.StateType.PENDING, orm.StateType.RUNNING):
            session.add(orm.FlowRunState(flow_run_id=run_id, type=kind, name=kind.value.title()))
        session.add(
            orm.TaskRun(
                id=task_id,
                flow_run_id=run_id,
                task_key="release-task",
                dynamic_key="0",
                name="release-task-run",
            )
        )
        session.flush()
        for n in range(3):
            session.add(
                orm.Log(
                    name="release",
                    level=20,
                    message=f"log {n}",
                    timestamp=now,
                    flow_run_id=run_id,
                    task_run_id=task_id,
                )
            )
    engine.dispose()
    return {"flow": str(flow_id), "flow_run": str(run_id), "task_run": str(task_id), "logs": 3}


def main() -> None:
    """Write with the API when the release has one, else with its models; print the ids."""
    has_server = importlib.util.find_spec("flowdb.server") is not None
    written = through_api() if has_server else through_models()
    json.dump({**written, "through": "api" if has_server else "models"}, sys.stdout)


if __name__ == "__main__":
    main()

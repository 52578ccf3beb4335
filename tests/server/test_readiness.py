"""``/api/ready`` during upgrades: replicas stay in service while the schema serves them."""

from __future__ import annotations

from fastapi.testclient import TestClient

from flowdb.database.alembic_commands import alembic_downgrade, alembic_upgrade
from flowdb.database.history import load_history
from tests.dbtools import lock_holder, set_revision


def test_ready_while_a_migration_runs_on_a_schema_that_already_serves_this_code(
    api: TestClient, configured: str
) -> None:
    history = load_history()
    previous = history.revisions[-2].id
    # The schema is head's, but the revision row says the last migration has not finished:
    # as it is between the last phase of an online migration and its version update.
    set_revision(configured, previous)
    assert api.get("/api/ready").status_code == 503  # behind, and nobody is migrating

    with lock_holder(configured) as holder:
        response = api.get("/api/ready")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["schema_revision"] == previous
        assert body["head"] == history.head
        assert f"pid {holder.pid}" in body["detail"]
        assert "already serves this code" in body["detail"]


def test_not_ready_while_a_migration_runs_on_a_schema_this_code_cannot_use(
    api: TestClient, configured: str
) -> None:
    alembic_downgrade("-1")  # the head migration adds deployment_schedule
    with lock_holder(configured):
        response = api.get("/api/ready")
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "a migration is running" in detail
    assert "deployment_schedule" in detail
    alembic_upgrade()
    assert api.get("/api/ready").status_code == 200

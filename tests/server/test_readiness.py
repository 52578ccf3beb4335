"""``/api/ready`` during upgrades: replicas stay in service while the schema serves them."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from flowdb.database.alembic_commands import alembic_downgrade, alembic_upgrade
from flowdb.database.history import MIGRATIONS_FOLDER, load_history
from flowdb.server import readiness
from tests.cli.helpers import flowdb, ok
from tests.dbtools import holder_description, lock_holder, set_revision, sync_engine


def test_ready_while_a_migration_runs_on_a_schema_that_already_serves_this_code(
    api: TestClient, configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "KEY_EVERY_SECONDS", 0)  # each probe reads the holder
    history = load_history()
    # Before an expand and a contract revision (a contract alone waits for the older
    # replicas and serves meanwhile: test_ready_on_the_expanded_schema_while_a_contract_waits).
    previous = "7b5e9c2f4d3a"
    # The schema is head's, but the revision row says the last migrations have not finished:
    # as it is between the last phase of an online migration and its version update.
    set_revision(configured, previous)
    assert api.get("/api/ready").status_code == 503  # behind, and nobody is migrating

    with lock_holder(configured) as holder:
        response = api.get("/api/ready")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["schema_revision"] == previous
        assert body["head"] == history.head
        assert holder_description(configured, holder) in body["detail"]
        assert "already serves this code" in body["detail"]


def test_not_ready_while_a_migration_runs_on_a_schema_this_code_cannot_use(
    api: TestClient, configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "KEY_EVERY_SECONDS", 0)  # each probe reads the version
    alembic_downgrade("6a4d8b1e3c29")  # 7b5e9c2f4d3a adds deployment_schedule
    with lock_holder(configured):
        response = api.get("/api/ready")
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "a migration is running" in detail
    assert "deployment_schedule" in detail
    alembic_upgrade()
    assert api.get("/api/ready").status_code == 200


def test_ready_on_the_expanded_schema_while_a_contract_waits(
    api: TestClient, configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "KEY_EVERY_SECONDS", 0)  # each probe reads the version
    alembic_downgrade("a1f5c7e9b3d2")  # the expand ran; the contract b2a6d8f0c4e3 waits
    response = api.get("/api/ready")
    assert response.status_code == 200, response.text
    detail = response.json()["detail"]
    assert "revision(s) b2a6d8f0c4e3 are left, from the contract b2a6d8f0c4e3 on" in detail
    alembic_downgrade("9e3f5a7b2d46")  # the expand too is pending: not this code's schema
    assert api.get("/api/ready").status_code == 503
    # Held before the contract 9e3f5a7b2d46, the expand a1f5c7e9b3d2 behind it: every column
    # this code uses exists, so it serves, as an upgrade with held contracts leaves it.
    alembic_downgrade("8d2e4f6a1c35")
    response = api.get("/api/ready")
    assert response.status_code == 200, response.text
    detail = response.json()["detail"]
    assert (
        "revision(s) 9e3f5a7b2d46, a1f5c7e9b3d2, b2a6d8f0c4e3 are left, from the contract "
        "9e3f5a7b2d46 on"
    ) in detail


NEWER_REVISION = '''"""{title}

Revision ID: {revision}
Revises: {parent}
"""

import sqlalchemy as sa
from alembic import op

revision: str = "{revision}"
down_revision: str | None = "{parent}"
branch_labels = None
depends_on = None

SERVES_PREVIOUS_CODE = {serves}


def upgrade() -> None:
    op.create_table("{table}", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("{table}")
'''


def newer_release(tmp_path: Path, *serves: bool) -> Path:
    """A copy of the migrations folder with one more revision per ``serves`` flag."""
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_FOLDER, copy, ignore=shutil.ignore_patterns("__pycache__"))
    parent = load_history().head
    for number, flag in enumerate(serves, start=1):
        revision = f"a11ead{number:06d}"
        text = NEWER_REVISION.format(
            title=f"A newer release's revision {number}.",
            revision=revision,
            parent=parent,
            serves=flag,
            table=f"newer_feature_{number}",
        )
        (copy / "versions" / f"2099_01_0{number}_{revision}_newer.py").write_text(text)
        parent = revision
    return copy


def test_the_previous_release_stays_ready_on_a_schema_ahead_by_compatible_revisions(
    api: TestClient, configured: str, tmp_path: Path
) -> None:
    # `api` runs this code (the previous release); a newer release upgrades the database.
    newer = newer_release(tmp_path, True)
    ok(flowdb(configured, "database", "upgrade", "-y", migrations=newer))
    response = api.get("/api/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["schema_revision"] == "a11ead000001"
    assert "a11ead000001" in body["detail"] and "ahead" in body["detail"]
    assert api.get("/api/flows").status_code == 200  # and it does serve


def test_the_previous_release_is_not_ready_once_a_revision_breaks_its_code(
    api: TestClient, configured: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "KEY_EVERY_SECONDS", 0)  # each probe reads the version
    newer = newer_release(tmp_path, True, False)
    # `api` is a replica of the previous release (its heartbeat): the newer release's
    # upgrade stops before its contract revision a11ead000002 ...
    held = ok(flowdb(configured, "database", "upgrade", "-y", migrations=newer))
    assert "Stopped before contract a11ead000002: 1 replica" in " ".join(held.stderr.split())
    assert api.get("/api/ready").status_code == 200
    # ... unless told to go on: then this replica's code is broken, and it says so.
    ok(flowdb(configured, "database", "upgrade", "-y", "--contract-now", migrations=newer))
    response = api.get("/api/ready")
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "a11ead000002" in detail and "SERVES_PREVIOUS_CODE" in detail
    assert "2 revision(s) ahead" in detail


def test_a_database_ahead_without_a_record_is_not_ready(api: TestClient, configured: str) -> None:
    set_revision(configured, "0ddba11c0de5")  # no file here, no record of how it got there
    response = api.get("/api/ready")
    assert response.status_code == 503


def test_ready_is_cached_while_the_version_row_stays_the_same(
    api: TestClient, configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe judges the schema again only when the version row changed, or at most every
    ``RECHECK_SECONDS``: a table dropped behind flowdb's back shows after that, not at once."""
    # Short (not the 10 s of production), long enough for the drop in between to come
    # well inside it: the claim is the window, not its length.
    monkeypatch.setattr(readiness, "RECHECK_SECONDS", 2.0)
    assert api.get("/api/ready").status_code == 200
    engine = sync_engine(configured)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE saved_search"))
    finally:
        engine.dispose()
    dropped = time.monotonic()
    assert api.get("/api/ready").status_code == 200  # the cached verdict
    time.sleep(max(readiness.RECHECK_SECONDS + 0.1 - (time.monotonic() - dropped), 0))
    response = api.get("/api/ready")
    assert response.status_code == 503
    assert "table saved_search" in response.json()["detail"]


def test_a_new_version_row_is_judged_within_a_second(api: TestClient, configured: str) -> None:
    assert api.get("/api/ready").status_code == 200
    # Behind by expand revisions (behind by a contract only, this code serves: fleet).
    behind = "7b5e9c2f4d3a"  # before 8c6f0a3e5b41 and 8d2e4f6a1c35
    set_revision(configured, behind)
    time.sleep(readiness.KEY_EVERY_SECONDS)
    response = api.get("/api/ready")
    assert response.status_code == 503
    assert behind in response.json()["detail"]

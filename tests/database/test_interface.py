"""``ensure_schema()``: what every server replica calls on start."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.database.history import load_history
from flowdb.database.interface import ensure_schema
from flowdb.errors import DatabaseNewerThanCodeError, SchemaNotAtHeadError
from tests.dbtools import revision_of, set_revision

UNKNOWN = "ffffffffffff"


def test_fresh_database_is_brought_to_head(configured: str) -> None:
    status = ensure_schema()
    assert status.at_head
    assert revision_of(configured) == load_history().head


def test_at_head_it_neither_imports_alembic_nor_writes(configured: str) -> None:
    alembic_upgrade()
    probe = (
        "import sys\n"
        "from flowdb.database.interface import ensure_schema\n"
        "status = ensure_schema()\n"
        "print(status.at_head, 'alembic' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "FLOWDB_DATABASE_URL": configured},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]


def test_migrate_off_refuses_a_database_behind_and_leaves_it(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWDB_SCHEMA_WAIT_TIMEOUT", "0.5")
    history = load_history()
    alembic_upgrade(history.revisions[3].id)
    started = time.monotonic()
    with pytest.raises(SchemaNotAtHeadError, match=r"flowdb database upgrade -y") as caught:
        ensure_schema(migrate=False)
    assert 0.5 <= time.monotonic() - started < 10
    assert f"{len(history.revisions) - 4} migration(s) behind" in str(caught.value)
    assert "FLOWDB_SCHEMA_WAIT_TIMEOUT" in str(caught.value)
    assert revision_of(configured) == history.revisions[3].id


def test_migrate_off_waits_for_another_process_to_reach_head(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWDB_SCHEMA_WAIT_TIMEOUT", "60")
    history = load_history()
    alembic_upgrade(history.revisions[3].id)
    migration_job = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(1.5); "
            "from flowdb.database.alembic_commands import alembic_upgrade; alembic_upgrade()",
        ],
        env={**os.environ, "FLOWDB_DATABASE_URL": configured},
    )
    try:
        status = ensure_schema(migrate=False)
    finally:
        assert migration_job.wait(timeout=60) == 0

    assert status.at_head
    assert revision_of(configured) == history.head


@pytest.mark.parametrize("migrate", [True, False])
def test_database_newer_than_the_code_fails_fast_and_is_not_touched(
    configured: str, migrate: bool
) -> None:
    alembic_upgrade()
    set_revision(configured, UNKNOWN)
    with pytest.raises(DatabaseNewerThanCodeError, match=UNKNOWN):
        ensure_schema(migrate=migrate)
    assert revision_of(configured) == UNKNOWN

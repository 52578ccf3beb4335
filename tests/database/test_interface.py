"""``ensure_schema()``: what every server replica calls on start."""

from __future__ import annotations

import os
import subprocess
import sys

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


def test_migrate_off_refuses_a_database_behind_and_leaves_it(configured: str) -> None:
    history = load_history()
    alembic_upgrade(history.revisions[3].id)
    with pytest.raises(SchemaNotAtHeadError, match=r"flowdb database upgrade -y") as caught:
        ensure_schema(migrate=False)
    assert f"{len(history.revisions) - 4} migration(s) behind" in str(caught.value)
    assert revision_of(configured) == history.revisions[3].id


@pytest.mark.parametrize("migrate", [True, False])
def test_database_newer_than_the_code_fails_fast_and_is_not_touched(
    configured: str, migrate: bool
) -> None:
    alembic_upgrade()
    set_revision(configured, UNKNOWN)
    with pytest.raises(DatabaseNewerThanCodeError, match=UNKNOWN):
        ensure_schema(migrate=migrate)
    assert revision_of(configured) == UNKNOWN

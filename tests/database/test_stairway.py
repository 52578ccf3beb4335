"""Every revision, on SQLite and PostgreSQL: up one step, down one step, up again."""

from __future__ import annotations

import pytest

from flowdb.database.alembic_commands import alembic_downgrade, alembic_upgrade
from flowdb.database.history import load_history
from tests.dbtools import revision_of, table_names


def test_stairway_from_base_to_head(configured: str) -> None:
    history = load_history()
    assert len(history.revisions) >= 12
    for revision in history.revisions:
        alembic_upgrade("+1")
        assert revision_of(configured) == revision.id
        tables_after_upgrade = table_names(configured)

        alembic_downgrade("-1")
        assert revision_of(configured) == revision.down_revision

        alembic_upgrade("+1")
        assert revision_of(configured) == revision.id
        assert table_names(configured) == tables_after_upgrade
    assert revision_of(configured) == history.head


def test_full_downgrade_removes_every_table(configured: str) -> None:
    alembic_upgrade()
    assert "flow_run" in table_names(configured)
    alembic_downgrade("base")
    # Alembic's (empty) version table and flowdb's own tables, which outlive downgrades.
    assert table_names(configured) <= {
        "alembic_version",
        "flowdb_migration_run",
        "flowdb_bookkeeping_version",
        "flowdb_replica",
    }
    assert revision_of(configured) is None


@pytest.mark.parametrize("revision", ["head", "+1"])
def test_upgrade_is_idempotent_at_head(configured: str, revision: str) -> None:
    alembic_upgrade()
    head = load_history().head
    if revision == "+1":
        with pytest.raises(Exception, match="only 0 revision"):
            alembic_upgrade(revision)
    else:
        alembic_upgrade(revision)
    assert revision_of(configured) == head

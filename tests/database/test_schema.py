"""Head matches the models, and the light history reader agrees with Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory

from flowdb.database.alembic_commands import alembic_config, alembic_downgrade, alembic_upgrade
from flowdb.database.history import VERSIONS_FOLDER, load_history
from flowdb.database.schema_check import schema_differences
from flowdb.database.target import Database


def test_head_matches_the_models_and_the_check_can_fail(configured: str) -> None:
    database = Database.from_url(configured)
    alembic_upgrade()
    assert schema_differences(database) == []
    alembic_downgrade("6a4d8b1e3c29")  # before 7b5e9c2f4d3a, which adds deployment_schedule
    differences = schema_differences(database)
    assert any("deployment_schedule" in difference for difference in differences)


def test_history_reader_agrees_with_alembic(configured: str) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    alembic_order = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    history = load_history()
    assert [revision.id for revision in history.revisions] == alembic_order
    assert history.head == script.get_current_head()
    assert len(history.revisions) >= 12
    assert all(revision.title for revision in history.revisions)


def test_migrations_never_import_the_models() -> None:
    files = list(Path(VERSIONS_FOLDER).glob("*.py"))
    assert files
    for path in files:
        assert "orm_models" not in path.read_text(encoding="utf-8"), path.name

"""The migration lint gate: the shipped history passes; an unsafe revision fails it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flowdb.database import history as history_module
from flowdb.database.history import forget_history, load_history
from flowdb.database.lint import lint
from flowdb.database.target import Database
from tests.cli.helpers import flowdb

HEAD = load_history().head

UNSAFE = f'''"""Add flow_run.priority the quick way: everything in one transaction.

Revision ID: 0badbadbad01
Revises: {HEAD}
"""

import sqlalchemy as sa
from alembic import op

revision = "0badbadbad01"
down_revision = "{HEAD}"
SERVES_PREVIOUS_CODE = True


def upgrade() -> None:
    op.add_column("flow_run", sa.Column("priority", sa.Integer(), nullable=True))
    op.execute("UPDATE flow_run SET priority = 0")
    op.alter_column("flow_run", "priority", nullable=False)
    op.create_index("ix_flow_run__priority", "flow_run", ["priority"])


def downgrade() -> None:
    op.drop_index("ix_flow_run__priority", table_name="flow_run")
    op.drop_column("flow_run", "priority")
'''


@pytest.fixture
def unsafe_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the migrations with one unsafe revision on top."""
    copy = tmp_path / "migrations"
    shutil.copytree(
        history_module.MIGRATIONS_FOLDER, copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    (copy / "versions" / "2026_12_31_0badbadbad01_unsafe.py").write_text(UNSAFE)
    monkeypatch.setattr(history_module, "MIGRATIONS_FOLDER", copy)
    forget_history()
    yield copy
    forget_history()


def test_the_shipped_history_passes_the_lint() -> None:
    assert lint(Database.from_url("sqlite:///unused.db")) == []


def test_an_unsafe_revision_fails_the_lint_on_every_count(unsafe_history: Path) -> None:
    database = Database.from_url("sqlite:///unused.db")
    findings = lint(database, [database.history.get("0badbadbad01")])
    rules = {finding.rule for finding in findings}
    assert "backfill-in-ddl-transaction" in rules  # the UPDATE runs under the ALTER's lock
    assert "require-concurrent-index-creation" in rules
    assert "serves-previous-code" in rules  # SET NOT NULL breaks the previous code's inserts
    assert all(finding.revision == "0badbadbad01" for finding in findings)


def test_an_allowance_with_a_reason_silences_its_rule(unsafe_history: Path) -> None:
    path = unsafe_history / "versions" / "2026_12_31_0badbadbad01_unsafe.py"
    path.write_text(
        path.read_text().replace(
            "SERVES_PREVIOUS_CODE = True",
            'SERVES_PREVIOUS_CODE = True\nLINT_ALLOW = {"require-concurrent-index-creation": '
            '"an example"}',
        )
    )
    database = Database.from_url("sqlite:///unused.db")
    rules = {f.rule for f in lint(database, [database.history.get("0badbadbad01")])}
    assert "require-concurrent-index-creation" not in rules
    assert "backfill-in-ddl-transaction" in rules


def test_the_cli_gate_fails_on_the_unsafe_revision(unsafe_history: Path, tmp_path: Path) -> None:
    result = flowdb(None, "database", "lint", home=tmp_path / "home", migrations=unsafe_history)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0badbadbad01" in result.stdout
    assert "backfill-in-ddl-transaction" in result.stdout
    assert "Traceback" not in result.stderr


def test_the_head_schema_has_an_index_for_every_foreign_key() -> None:
    from flowdb.database.lint import foreign_keys_without_index

    assert foreign_keys_without_index(HEAD) == []


def test_a_foreign_key_without_a_covering_index_is_refused() -> None:
    import sqlalchemy as sa

    from flowdb.database.lint import foreign_keys_without_index

    metadata = sa.MetaData()
    sa.Table("parent", metadata, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "child",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("other", sa.Integer),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("parent.id")),
        sa.Index("ix_child__other_parent_id", "other", "parent_id"),  # not leading: no cover
    )
    sa.Table(
        "covered",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("parent.id")),
        sa.Column("name", sa.String(10)),
        sa.UniqueConstraint("parent_id", "name"),  # leading column: covers
    )
    findings = foreign_keys_without_index(HEAD, metadata)
    assert [(f.rule, f.message.split(" ")[0]) for f in findings] == [
        ("fk-without-index", "child.parent_id")
    ]


def _with_revision(history: Path, declarations: str, body: str) -> Database:
    """The copied history plus revision 0badbadbad02 with ``declarations`` and ``body``."""
    text = f'''"""A revision for the phase rules.

Revision ID: 0badbadbad02
Revises: 0badbadbad01
"""

import sqlalchemy as sa
from alembic import op

revision = "0badbadbad02"
down_revision = "0badbadbad01"
{declarations}


def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
'''
    (history / "versions" / "2026_12_31_0badbadbad02_phase.py").write_text(text)
    forget_history()
    return Database.from_url("sqlite:///unused.db")


def _rules(database: Database) -> set[str]:
    return {f.rule for f in lint(database, [database.history.get("0badbadbad02")])}


def test_an_expand_revision_that_drops_a_column_fails_the_lint(unsafe_history: Path) -> None:
    database = _with_revision(
        unsafe_history, 'PHASE = "expand"', '    op.drop_column("flow", "tags")'
    )
    assert database.history.get("0badbadbad02").phase == "expand"
    assert "serves-previous-code" in _rules(database)


def test_a_contract_revision_may_drop_a_column(unsafe_history: Path) -> None:
    database = _with_revision(
        unsafe_history, 'PHASE = "contract"', '    op.drop_column("flow", "tags")'
    )
    assert database.history.get("0badbadbad02").phase == "contract"
    assert not {"serves-previous-code", "ban-drop-column", "phase"} & _rules(database)


def test_an_expand_revision_that_rebuilds_a_table_on_sqlite_fails_the_lint(
    unsafe_history: Path,
) -> None:
    body = (
        '    with op.batch_alter_table("flow") as batch:\n'
        '        batch.add_column(sa.Column("note", sa.Text(), nullable=True))'
    )
    database = _with_revision(unsafe_history, 'PHASE = "expand"', body)
    findings = lint(database, [database.history.get("0badbadbad02")])
    rebuilds = [f for f in findings if f.rule == "expand-rebuilds-table"]
    assert len(rebuilds) == 1 and "batch_alter_table" in rebuilds[0].message
    never = body.replace('batch_alter_table("flow")', 'batch_alter_table("flow", recreate="never")')
    assert "expand-rebuilds-table" not in _rules(
        _with_revision(unsafe_history, 'PHASE = "expand"', never)
    )


def test_a_phase_that_contradicts_serves_previous_code_fails_the_lint(
    unsafe_history: Path,
) -> None:
    database = _with_revision(
        unsafe_history,
        'PHASE = "expand"\nSERVES_PREVIOUS_CODE = False',
        '    op.add_column("flow", sa.Column("note", sa.Text(), nullable=True))',
    )
    assert "phase" in _rules(database)


def _rebuild_calls(revision_path: Path) -> set[str]:
    """The calls of a revision's upgrade() that rebuild a table on SQLite."""
    import ast

    from flowdb.database.lint import _REBUILDS

    tree = ast.parse(revision_path.read_text(encoding="utf-8"))
    upgrade = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade")
    found = set()
    for node in ast.walk(upgrade):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in _REBUILDS:
                found.add(name)
    return found


def test_no_expand_revision_since_phases_rebuilds_a_table_on_sqlite() -> None:
    """Over the whole history: the expands that rebuild a table on SQLite are three released
    ones (add_reference, from before revisions declared phases), all before the first
    revision that declares one; no expand a rolling upgrade runs rebuilds a table."""
    history = load_history()
    first_declared = next(r for r in history.revisions if r.declared_phase is not None)
    rebuilding = {r.id for r in history.revisions if r.phase == "expand" and _rebuild_calls(r.path)}
    assert rebuilding == {"d2a6f4b8c1e3", "e9b3c7d5f2a4", "6a4d8b1e3c29"}
    assert all(history.position(r) < history.position(first_declared.id) for r in rebuilding)
    contracts = [r.id for r in history.revisions if r.phase == "contract"]
    assert "b2a6d8f0c4e3" in contracts and _rebuild_calls(history.get("b2a6d8f0c4e3").path)


def test_the_not_null_pair_declared_as_expand_fails_the_lint(unsafe_history: Path) -> None:
    """The contract's SET NOT NULL, declared expand: refused for the SQL and the rebuild."""
    body = (
        "    from flowdb.database.migrations.online import OnlineMigration\n\n"
        "    online = OnlineMigration(revision)\n"
        '    online.prove_not_null("log", "flow_run_id")\n'
        "    online.contract()\n"
        '    online.set_not_null("log", "flow_run_id")\n'
        "    online.finish()"
    )
    rules = _rules(_with_revision(unsafe_history, 'PHASE = "expand"', body))
    assert "serves-previous-code" in rules
    assert "expand-rebuilds-table" in rules

"""What ``alembic_internals`` relies on, checked on the installed Alembic.

Each function of the adapter reaches into Alembic's private attributes; these tests run
them on real connections and real Alembic objects, so an Alembic that renames or
changes one of those attributes fails here, naming the function, before a migration
meets it.
"""

from __future__ import annotations

import ast
import io
from pathlib import Path
from typing import Any

import alembic
import alembic.command
import alembic.context
import pytest
import sqlalchemy as sa
from alembic.config import CommandLine, Config
from alembic.ddl.impl import DefaultImpl
from alembic.ddl.mysql import MySQLImpl
from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import flowdb
from flowdb.database.alembic_internals import (
    cli_function,
    commit_and_begin,
    environment_options,
    guard_implementation,
)
from flowdb.database.history import MIGRATIONS_FOLDER
from flowdb.database.migrations import restartable
from tests.dbtools import sync_engine


def _rows(url: str) -> list[int]:
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.text("SELECT n FROM probe ORDER BY n")).scalars())
    finally:
        engine.dispose()


def test_commit_and_begin_commits_and_alembic_ends_the_new_transaction(database_url: str) -> None:
    engine = sync_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE probe (n INTEGER NOT NULL)"))
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"transactional_ddl": True})
            with context.begin_transaction():
                connection.execute(sa.text("INSERT INTO probe (n) VALUES (1)"))
                before = context._transaction
                commit_and_begin(context)
                assert _rows(database_url) == [1]  # committed: another connection sees it
                after = context._transaction
                assert after is not None and after is not before and after.is_active
                connection.execute(sa.text("INSERT INTO probe (n) VALUES (2)"))
            # Alembic committed the transaction it was handed.
            assert _rows(database_url) == [1, 2]
            with pytest.raises(RuntimeError), context.begin_transaction():
                connection.execute(sa.text("INSERT INTO probe (n) VALUES (3)"))
                commit_and_begin(context)
                connection.execute(sa.text("INSERT INTO probe (n) VALUES (4)"))
                raise RuntimeError("the migration failed")
            # ... and rolls it back on a failure: only the new transaction's work is lost.
            assert _rows(database_url) == [1, 2, 3]
    finally:
        engine.dispose()


def _offline_mysql_context() -> tuple[MigrationContext, io.StringIO]:
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="mysql", opts={"as_sql": True, "output_buffer": buffer}
    )
    return context, buffer


def test_a_guarded_implementation_serves_one_context_and_is_never_registered() -> None:
    registry = dict(alembic.ddl.impl._impls)
    guarded, buffer = _offline_mysql_context()
    plain, plain_buffer = _offline_mysql_context()
    seen: list[str] = []

    def create_table(self: Any, table: Any, **kw: Any) -> None:
        seen.append(table.name)
        super(type(self), self).create_table(table, **kw)

    cls = guard_implementation(guarded, {"create_table": create_table})
    assert issubclass(cls, MySQLImpl) and cls is not MySQLImpl
    assert type(guarded.impl) is cls
    # Alembic's registry, and every other context, keep Alembic's own class.
    assert dict(alembic.ddl.impl._impls) == registry
    assert DefaultImpl.get_by_dialect(guarded.dialect) is MySQLImpl
    assert type(plain.impl) is MySQLImpl
    # Alembic's operations reach the guarded method, whose super() call does the work.
    Operations(guarded).create_table("guarded_table", sa.Column("id", sa.Integer))
    Operations(plain).create_table("plain_table", sa.Column("id", sa.Integer))
    assert seen == ["guarded_table"]
    assert "CREATE TABLE guarded_table" in buffer.getvalue()
    assert "CREATE TABLE plain_table" in plain_buffer.getvalue()
    # Guarding again (the same context, or another of the same dialect) reuses the class.
    assert guard_implementation(guarded, {"create_table": create_table}) is cls
    assert guard_implementation(plain, {"create_table": create_table}) is cls


def test_restartable_ddl_skips_what_is_there_on_mariadb(mariadb_url: str) -> None:
    engine = sync_engine(mariadb_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            restartable.install(context)
            operations = Operations(context)
            for _ in range(2):  # the second run finds the table and the column: no error
                operations.create_table("probe", sa.Column("id", sa.Integer, primary_key=True))
                operations.add_column("probe", sa.Column("extra", sa.Integer))
            unguarded = Operations(MigrationContext.configure(connection))
            with pytest.raises(sa.exc.OperationalError):
                unguarded.create_table("probe", sa.Column("id", sa.Integer, primary_key=True))
    finally:
        engine.dispose()


def test_environment_options_are_what_the_command_gave_env_py() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_FOLDER))
    script = ScriptDirectory.from_config(config)

    def fn(rev: Any, context: Any) -> list[Any]:
        return []

    assert environment_options(alembic.context) == {}
    with EnvironmentContext(config, script, fn=fn, destination_rev="-1", as_sql=True):
        options = environment_options(alembic.context)
        assert options["fn"] is fn
        assert options["destination_rev"] == "-1"
    assert environment_options(alembic.context) == {}


def test_cli_function_is_the_command_alembic_parsed() -> None:
    parser = CommandLine().parser
    assert cli_function(Config(cmd_opts=parser.parse_args(["upgrade", "head"]))) is (
        alembic.command.upgrade
    )
    assert cli_function(Config(cmd_opts=parser.parse_args(["stamp", "base"]))) is (
        alembic.command.stamp
    )
    assert cli_function(Config()) is None


#: Alembic's private attributes flowdb has needed; the adapter is their one reader.
PRIVATE = {"_impls", "_transaction", "_proxy", "_proxied_transaction", "_migration_context"}


def private_reaches(path: Path) -> list[str]:
    """Places in ``path`` that read one of ``PRIVATE``, or import a private name from Alembic."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alembic"):
            found += [
                f"{path.name}:{node.lineno} {node.module}.{alias.name}"
                for alias in node.names
                if alias.name.startswith("_")
            ]
        elif isinstance(node, ast.Constant) and node.value in PRIVATE:  # getattr(x, "_proxy")
            found.append(f"{path.name}:{node.lineno} {node.value!r}")
    return found


def test_only_the_adapter_reaches_into_alembic() -> None:
    source = Path(flowdb.__file__).parent
    adapter = source / "database" / "alembic_internals.py"
    assert private_reaches(adapter)  # the check sees the adapter's own reaches
    offenders = [
        place
        for path in sorted(source.rglob("*.py"))
        if path != adapter
        for place in private_reaches(path)
    ]
    assert offenders == []

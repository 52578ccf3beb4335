"""The suite's own machinery: per-process databases made empty again, in-process CLI runs.

Other tests rely on ``postgres_url`` and ``mariadb_url`` being empty and theirs alone,
and on ``tests.cli.helpers.flowdb`` answering as the installed command does.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from tests.cli.helpers import flowdb, flowdb_process
from tests.dbtools import (
    create_mariadb_database,
    create_postgres_database,
    drop_mariadb_database,
    drop_postgres_database,
    reset_mariadb_database,
    reset_postgres_database,
    sync_engine,
    table_names,
)


def test_a_postgresql_reset_leaves_nothing_a_test_made() -> None:
    url = create_postgres_database()
    name = sa.make_url(url).database
    engine = sync_engine(url)
    left_open = engine.connect()
    try:
        with engine.begin() as connection:
            for statement in (
                "CREATE TABLE kept (id int)",
                "CREATE TYPE mood AS ENUM ('ok')",
                "CREATE SCHEMA other",
                "CREATE TABLE other.t (id int)",
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                f"ALTER DATABASE \"{name}\" SET statement_timeout = '1ms'",
                "REVOKE USAGE ON SCHEMA public FROM PUBLIC",
            ):
                connection.execute(sa.text(statement))
        left_open.execute(sa.text("SELECT 1"))
        reset_postgres_database(url)
        assert table_names(url) == set()
        with engine.connect() as connection:
            schemas = connection.execute(
                sa.text("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%'")
            ).scalars()
            assert set(schemas) == {"public", "information_schema"}
            assert connection.execute(sa.text("SHOW statement_timeout")).scalar() == "0"
            assert not connection.execute(
                sa.text("SELECT count(*) FROM pg_type WHERE typname = 'mood'")
            ).scalar()
            assert connection.execute(
                sa.text("SELECT has_schema_privilege('public', 'public', 'USAGE')")
            ).scalar()
        # The session the test left open was ended, as dropping the database did.
        try:
            left_open.execute(sa.text("SELECT 1"))
            ended = False
        except sa.exc.DBAPIError:
            ended = True
        assert ended
    finally:
        left_open.invalidate()
        engine.dispose()
        drop_postgres_database(url)


def test_a_mariadb_reset_leaves_an_empty_utf8mb4_database() -> None:
    url = create_mariadb_database()
    name = sa.make_url(url).database
    engine = sync_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE kept (id int)"))
            connection.execute(sa.text(f"ALTER DATABASE `{name}` CHARACTER SET latin1"))
        assert table_names(url) == {"kept"}
        assert reset_mariadb_database(url) == url
        assert table_names(url) == set()
        with engine.connect() as connection:
            charset = connection.execute(
                sa.text(
                    "SELECT default_character_set_name FROM information_schema.schemata "
                    "WHERE schema_name = :name"
                ),
                {"name": name},
            ).scalar()
        assert charset == "utf8mb4"
    finally:
        engine.dispose()
        drop_mariadb_database(url)


def test_the_fixture_databases_start_empty(postgres_url: str, mariadb_url: str) -> None:
    assert table_names(postgres_url) == set()
    assert table_names(mariadb_url) == set()


def test_in_process_runs_answer_as_the_command_does(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flowdb.db'}"
    for args in (
        ("database", "upgrade", "-y", "-r", "1"),  # a usage error of flowdb's own
        ("database", "upgrade", "--bogus"),  # a usage error of Typer's
        ("database", "current"),  # a success on an empty database
    ):
        here = flowdb(url, *args, home=tmp_path / "home")
        there = flowdb_process(url, *args, home=tmp_path / "home")
        # The child runs as ``python -m flowdb``; in-process it is named as installed.
        there_stderr = there.stderr.replace("'python -m flowdb ", "'flowdb ")
        assert (here.returncode, here.stdout, here.stderr) == (
            there.returncode,
            there.stdout,
            there_stderr,
        ), args

"""Driver errors are recognised by their codes, not their text (issue 19).

Each error here is a real one, raised by a real server or file. PostgreSQL's session is
switched to another message language when the server has one (``lc_messages``); where
it has none, the translation is given a text in another language instead, so that it
can only go by the SQLSTATE, which is checked too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from flowdb.database.dialects.postgresql import sqlstate
from flowdb.database.dialects.sqlite import result_code
from flowdb.database.target import Database
from flowdb.errors import (
    ConfigurationError,
    CorruptDatabaseError,
    DatabaseBusyError,
    DatabaseReadOnlyError,
    DatabaseUnreachableError,
    FlowdbError,
    MigrationFailedError,
)

#: A first line in another language: a translation that read the text would miss it.
FOREIGN = "FEHLER:  etwas ist schiefgegangen"
LANGUAGES = ("de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "es_ES.UTF-8", "ja_JP.UTF-8")


def _other_language(connection: sa.Connection) -> str | None:
    """Switch the session's messages to a language other than English, if the server can."""
    for language in LANGUAGES:
        try:
            with connection.begin_nested():
                connection.execute(sa.text(f"SET lc_messages TO '{language}'"))
            return language
        except sa.exc.DBAPIError:
            continue
    return None


def _raised(action: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as caught:
        action()
    return caught.value


POSTGRES_CASES: list[tuple[str, str, str, type[FlowdbError]]] = [
    # (setup, failing statement, SQLSTATE, translation)
    ("SET LOCAL statement_timeout = 1", "SELECT pg_sleep(1)", "57014", MigrationFailedError),
    ("SET LOCAL search_path = nowhere", "CREATE TABLE t_missing (id int)", "3F000",
     ConfigurationError),
    ("SET LOCAL transaction_read_only = on", "CREATE TABLE t_ro (id int)", "25006",
     DatabaseReadOnlyError),
    ("SET LOCAL ROLE pg_read_all_data", "CREATE TABLE t_denied (id int)", "42501",
     DatabaseReadOnlyError),
]  # fmt: skip


@pytest.mark.parametrize(("setup", "statement", "code", "kind"), POSTGRES_CASES)
def test_postgresql_errors_are_translated_by_sqlstate(
    postgres_url: str, setup: str, statement: str, code: str, kind: type[FlowdbError]
) -> None:
    database = Database.from_url(postgres_url)
    engine = database.dialect.create_sync_engine("flowdb-test")
    try:
        with engine.connect() as connection:
            language = _other_language(connection)
            connection.execute(sa.text(setup))
            exc = _raised(lambda: connection.execute(sa.text(statement)))
            connection.rollback()
    finally:
        engine.dispose()
    assert sqlstate(exc) == code
    text = str(getattr(exc, "orig", exc))
    if language is not None:
        assert "ERROR" not in text  # the server really wrote another language
    translated = database.dialect.translate_error(exc, FOREIGN)
    assert isinstance(translated, kind), (language, text)
    assert FOREIGN in str(translated) or kind is MigrationFailedError


def test_postgresql_lock_timeout_is_recognised_by_sqlstate(postgres_url: str) -> None:
    database = Database.from_url(postgres_url)
    engine = database.dialect.create_sync_engine("flowdb-test")
    try:
        with engine.connect() as holder, engine.connect() as waiter:
            holder.execute(sa.text("CREATE TABLE t_locked (id int)"))
            holder.commit()
            holder.execute(sa.text("LOCK TABLE t_locked IN ACCESS EXCLUSIVE MODE"))
            _other_language(waiter)
            waiter.execute(sa.text("SET LOCAL lock_timeout = 50"))
            exc = _raised(lambda: waiter.execute(sa.text("SELECT * FROM t_locked")))
            waiter.rollback()
            holder.rollback()
    finally:
        engine.dispose()
    assert sqlstate(exc) == "55P03"
    assert database.dialect.is_lock_timeout(exc)
    assert isinstance(database.dialect.translate_error(exc, FOREIGN), DatabaseBusyError)


def test_postgresql_server_timeout_is_recognised_by_sqlstate(postgres_url: str) -> None:
    database = Database.from_url(postgres_url)
    engine = database.dialect.create_sync_engine("flowdb-test")
    try:
        with engine.connect() as connection:
            _other_language(connection)
            connection.execute(sa.text("SET LOCAL statement_timeout = 1"))
            exc = _raised(lambda: connection.execute(sa.text("SELECT pg_sleep(1)")))
    finally:
        engine.dispose()
    assert sqlstate(exc) == "57014"
    assert database.dialect.server_timeout_message(exc, FOREIGN) is not None


def test_postgresql_missing_database_and_refused_port_are_unreachable(postgres_url: str) -> None:
    url = sa.make_url(postgres_url)
    for broken in (url.set(database="flowdb_no_such_database"), url.set(port=1)):
        database = Database.from_url(broken.render_as_string(hide_password=False))
        engine = database.dialect.create_sync_engine("flowdb-test")
        try:
            exc = _raised(engine.connect)
        finally:
            engine.dispose()
        translated = database.dialect.translate_error(exc, FOREIGN)
        assert isinstance(translated, DatabaseUnreachableError), exc


def test_postgresql_unknown_error_is_left_alone(postgres_url: str) -> None:
    database = Database.from_url(postgres_url)
    engine = database.dialect.create_sync_engine("flowdb-test")
    try:
        with engine.connect() as connection:
            exc = _raised(lambda: connection.execute(sa.text("SELECT 1/0")))
    finally:
        engine.dispose()
    assert sqlstate(exc) == "22012"
    assert database.dialect.translate_error(exc, "permission denied, lock timeout") is None


def test_mariadb_errors_are_translated_by_number(mariadb_url: str) -> None:
    database = Database.from_url(mariadb_url)
    engine = database.dialect.create_sync_engine("flowdb-test")
    try:
        with engine.connect() as holder, engine.connect() as waiter:
            holder.execute(sa.text("CREATE TABLE t_locked (id int) ENGINE=InnoDB"))
            holder.execute(sa.text("INSERT INTO t_locked VALUES (1)"))
            holder.commit()
            holder.execute(sa.text("UPDATE t_locked SET id = 2"))
            waiter.execute(sa.text("SET SESSION innodb_lock_wait_timeout = 1"))
            exc = _raised(lambda: waiter.execute(sa.text("UPDATE t_locked SET id = 3")))
            holder.rollback()
    finally:
        engine.dispose()
    assert getattr(exc, "orig", exc).args[0] == 1205
    assert database.dialect.is_lock_timeout(exc)
    assert isinstance(database.dialect.translate_error(exc, FOREIGN), DatabaseBusyError)

    missing = sa.make_url(mariadb_url).set(database="flowdb_no_such_database")
    database = Database.from_url(missing.render_as_string(hide_password=False))
    engine = database.dialect.create_sync_engine("flowdb-test")
    try:
        exc = _raised(engine.connect)
    finally:
        engine.dispose()
    assert getattr(exc, "orig", exc).args[0] == 1049
    assert isinstance(database.dialect.translate_error(exc, FOREIGN), DatabaseUnreachableError)


def test_sqlite_errors_are_translated_by_result_code(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is no database" * 100)
    database = Database.from_url(f"sqlite:///{junk}")
    exc = _raised(lambda: sqlite3.connect(junk).execute("SELECT * FROM sqlite_master"))
    assert result_code(exc) == 26  # SQLITE_NOTADB
    assert isinstance(database.dialect.translate_error(exc, FOREIGN), CorruptDatabaseError)

    path = tmp_path / "busy.db"
    database = Database.from_url(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id int)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        exc = _raised(lambda: other.execute("BEGIN IMMEDIATE"))
        other.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result_code(exc) == 5  # SQLITE_BUSY
    assert isinstance(database.dialect.translate_error(exc, FOREIGN), DatabaseBusyError)
    assert database.dialect.server_timeout_message(exc, FOREIGN) is not None

    readonly = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    exc = _raised(lambda: readonly.execute("INSERT INTO t VALUES (1)"))
    readonly.close()
    assert result_code(exc) == 8  # SQLITE_READONLY
    assert isinstance(database.dialect.translate_error(exc, FOREIGN), DatabaseReadOnlyError)


def test_a_mariadb_server_without_tls_asked_for_it_says_so_not_that_a_statement_failed(
    mariadb_url: str,
) -> None:
    """Error 2026 read "The database rejected a statement and it was rolled back"."""
    import certifi

    from flowdb.errors import ExitCode
    from tests.cli.helpers import assert_one_line_error, flowdb
    from tests.dbtools import scalar

    have_ssl = scalar(mariadb_url, "SELECT @@have_ssl")
    result = flowdb(
        f"{mariadb_url}?ssl_verify_cert=true&ssl_ca={certifi.where()}", "database", "upgrade", "-y"
    )
    assert result.returncode == ExitCode.UNREACHABLE
    assert "rolled back" not in result.stderr
    if have_ssl != "YES":  # this machine's server: no TLS at all
        assert_one_line_error(result, "turned flowdb away", "TLS could not be set up")

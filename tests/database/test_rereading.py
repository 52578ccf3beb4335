"""``rereading.reread``: a read whose listed table vanished starts again, a bounded number of times.

Real driver errors of each dialect (a table that is not there), never mocks: the
dialect must recognise its own "no such table", and nothing else.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flowdb.database import rereading
from flowdb.database.target import Database
from flowdb.errors import DatabaseBusyError, ExitCode
from tests.dbtools import sync_engine


def select_from(database: Database, table: str, attempts: list[int]) -> list[int]:
    """One read attempt of ``table`` on flowdb's own engine, counted in ``attempts``."""
    attempts.append(1)
    engine = database.engine("test-reread")
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.text(f"SELECT n FROM {table}")).scalars())
    finally:
        engine.dispose()


def test_a_table_that_stays_gone_is_busy_after_the_attempts(database_url: str) -> None:
    database = Database.from_url(database_url)
    attempts: list[int] = []

    with pytest.raises(DatabaseBusyError) as raised:
        rereading.reread(database, lambda: select_from(database, "never_there", attempts))

    assert len(attempts) == rereading.ATTEMPTS
    assert raised.value.exit_code == ExitCode.BUSY
    assert "never_there" in str(raised.value) and "try again" in str(raised.value)


def test_a_read_starts_again_until_the_table_is_there(database_url: str) -> None:
    database = Database.from_url(database_url)
    attempts: list[int] = []

    def read() -> list[int]:
        if len(attempts) == 2:  # a migration's next commit brings the table (back)
            engine = sync_engine(database_url)
            try:
                with engine.begin() as connection:
                    connection.execute(sa.text("CREATE TABLE comes_back (n INTEGER)"))
                    connection.execute(sa.text("INSERT INTO comes_back (n) VALUES (7)"))
            finally:
                engine.dispose()
        return select_from(database, "comes_back", attempts)

    assert rereading.reread(database, read) == [7]
    assert len(attempts) == 3


def test_other_errors_are_not_read_again(database_url: str) -> None:
    database = Database.from_url(database_url)
    attempts: list[int] = []

    with pytest.raises(sa.exc.DBAPIError):
        rereading.reread(database, lambda: select_from(database, "(SELECT", attempts))

    assert len(attempts) == 1

"""MariaDB's snapshot dump edits the server's text only where it means to (issue 19).

The ``AUTO_INCREMENT`` counter was cut by a search over the whole ``SHOW CREATE TABLE``
text, so a default or comment holding `` AUTO_INCREMENT=7`` lost it too. It is a table
option now, cut from the options alone.
"""

from __future__ import annotations

import sqlalchemy as sa

from flowdb.database.dialects.mysql import catalogue

TRICKY = " AUTO_INCREMENT=7; CREATE TABLE x"


def test_the_counter_goes_and_a_default_and_comment_holding_it_stay(mariadb_url: str) -> None:
    engine = sa.create_engine(mariadb_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')"))
            connection.execute(
                sa.text(
                    "CREATE TABLE notes (id INT AUTO_INCREMENT PRIMARY KEY, "
                    f"body VARCHAR(64) NOT NULL DEFAULT '{TRICKY}') COMMENT '{TRICKY}'"
                )
            )
            connection.execute(sa.text("INSERT INTO notes (body) VALUES ('a'), ('b'), ('c')"))
            shown = str(connection.execute(sa.text('SHOW CREATE TABLE "notes"')).one()[1])
            assert shown.count("AUTO_INCREMENT=") == 3  # the counter, the default, the comment
            statements = catalogue.dump(connection, frozenset())
        create = statements[0]
        assert create.startswith('CREATE TABLE IF NOT EXISTS "notes" (')
        assert create.count(f"'{TRICKY}'") == 2, create
        assert create.count("AUTO_INCREMENT=") == 2, create
        assert len(statements) == 4  # and one INSERT per row
    finally:
        engine.dispose()

"""The floor: run a SQL file through the bare driver in one transaction.

Usage: ``python -m bench.floor URL SQL_FILE``. Imports nothing but the driver, so a
timed subprocess of it is the least any migration tool could cost.
"""

from __future__ import annotations

import sys


def main(url: str, sql_path: str) -> None:
    """Execute the SQL file at ``sql_path`` against ``url`` in a single transaction."""
    with open(sql_path, encoding="utf-8") as handle:
        sql = handle.read()
    if url.startswith("sqlite"):
        import sqlite3

        lite = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
        try:
            lite.executescript(f"BEGIN;\n{sql}\nCOMMIT;")
        finally:
            lite.close()
        return
    if url.startswith("mariadb"):
        run_mariadb_script(url, sql)
        return
    import psycopg

    conninfo = "postgresql://" + url.split("://", 1)[1]
    with psycopg.connect(conninfo) as connection:
        # A trusted script (flowdb's own dry-run output), run as one simple query.
        connection.execute(sql)


def run_mariadb_script(url: str, sql: str) -> None:
    """The script through PyMySQL as one multi-statement query (its DDL commits anyway)."""
    from urllib.parse import urlsplit

    import pymysql  # type: ignore[import-untyped]
    from pymysql.constants import CLIENT  # type: ignore[import-untyped]

    parts = urlsplit(url.replace("mariadb+pymysql://", "mysql://", 1))
    connection = pymysql.connect(
        host=parts.hostname,
        port=parts.port or 3306,
        user=parts.username,
        password=parts.password or "",
        database=parts.path.lstrip("/"),
        charset="utf8mb4",
        client_flag=CLIENT.MULTI_STATEMENTS,
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            while cursor.nextset():
                pass
        connection.commit()
    finally:
        connection.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

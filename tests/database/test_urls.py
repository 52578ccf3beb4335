"""Database URLs: accepted schemes, sync and async drivers, validation and password redaction."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import sqlalchemy as sa

from flowdb.database.dialects import parse_database_url
from flowdb.database.target import Database
from flowdb.database.urls import redact, redact_message
from flowdb.errors import ConfigurationError
from tests.dbtools import sqlite_path

SECRET = "s3cret"

SQLITE_PATH = "/var/lib/flowdb/flowdb.db"
PG = f"u:{SECRET}@db.example:5432/flows"


@pytest.mark.parametrize(
    ("raw", "dialect", "sync", "async_"),
    [
        (
            f"sqlite:///{SQLITE_PATH}",
            "sqlite",
            f"sqlite+pysqlite:///{SQLITE_PATH}",
            f"sqlite+aiosqlite:///{SQLITE_PATH}",
        ),
        (
            f"sqlite+aiosqlite:///{SQLITE_PATH}",
            "sqlite",
            f"sqlite+pysqlite:///{SQLITE_PATH}",
            f"sqlite+aiosqlite:///{SQLITE_PATH}",
        ),
        (
            f"sqlite+pysqlite:///{SQLITE_PATH}",
            "sqlite",
            f"sqlite+pysqlite:///{SQLITE_PATH}",
            f"sqlite+aiosqlite:///{SQLITE_PATH}",
        ),
        ("sqlite://", "sqlite", "sqlite+pysqlite://", "sqlite+aiosqlite://"),
        (
            f"postgresql://{PG}",
            "postgresql",
            f"postgresql+psycopg://{PG}",
            f"postgresql+asyncpg://{PG}",
        ),
        (
            f"postgresql+psycopg://{PG}",
            "postgresql",
            f"postgresql+psycopg://{PG}",
            f"postgresql+asyncpg://{PG}",
        ),
        (
            f"postgresql+asyncpg://{PG}",
            "postgresql",
            f"postgresql+psycopg://{PG}",
            f"postgresql+asyncpg://{PG}",
        ),
        (
            f"postgres://{PG}",
            "postgresql",
            f"postgresql+psycopg://{PG}",
            f"postgresql+asyncpg://{PG}",
        ),
        (
            f"postgresql+psycopg2://{PG}",
            "postgresql",
            f"postgresql+psycopg://{PG}",
            f"postgresql+asyncpg://{PG}",
        ),
        (
            "postgresql:///flows?host=/run/postgresql",
            "postgresql",
            "postgresql+psycopg:///flows?host=%2Frun%2Fpostgresql",
            # asyncpg takes URL parameters as connect arguments (translated), not in the URL
            "postgresql+asyncpg:///flows",
        ),
    ],
)
def test_driver_mapping(raw: str, dialect: str, sync: str, async_: str) -> None:
    database = Database.from_url(raw)

    assert database.url.backend == dialect
    assert database.dialect.name == dialect
    # The password must survive the mapping: the engines connect with these URLs.
    assert database.dialect.sync_url.render_as_string(hide_password=False) == sync
    assert database.dialect.async_url.render_as_string(hide_password=False) == async_


def test_surrounding_whitespace_is_ignored() -> None:
    database = Database.from_url(f"  postgresql://{PG}\n")
    assert (
        database.dialect.sync_url.render_as_string(hide_password=False)
        == f"postgresql+psycopg://{PG}"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"sqlite:///{SQLITE_PATH}", Path(SQLITE_PATH)),
        (f"sqlite+aiosqlite:///{SQLITE_PATH}", Path(SQLITE_PATH)),
        (f"sqlite:///file:{SQLITE_PATH}?mode=ro&uri=true", Path(SQLITE_PATH)),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///file:mem?mode=memory&cache=shared&uri=true", None),
        (f"postgresql://{PG}", None),
    ],
)
def test_sqlite_path(raw: str, expected: Path | None) -> None:
    assert sqlite_path(raw) == expected


def test_sqlite_path_is_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:///relative.db") == tmp_path / "relative.db"
    home_relative = sqlite_path("sqlite:///~/x.db")
    assert home_relative == (Path.home() / "x.db").resolve()


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (f"postgresql://{PG}", "postgresql://u:***@db.example:5432/flows"),
        (f"postgres://{PG}", "postgresql://u:***@db.example:5432/flows"),
        (f"postgresql+asyncpg://{PG}", "postgresql+asyncpg://u:***@db.example:5432/flows"),
        (
            f"postgresql://u@db/flows?password={SECRET}&sslmode=require",
            "postgresql://u@db/flows?password=***&sslmode=require",
        ),
        (f"postgresql://u:p%40{SECRET}@db/flows", "postgresql://u:***@db/flows"),
        ("postgresql://u@db/flows", "postgresql://u@db/flows"),
        (f"sqlite:///{SQLITE_PATH}", f"sqlite:///{SQLITE_PATH}"),
    ],
)
def test_redacted_url(raw: str, shown: str) -> None:
    database = parse_database_url(raw)
    assert database.redacted() == shown
    assert SECRET not in database.redacted()
    assert SECRET not in repr(database)  # SQLAlchemy's URL repr hides the password too


@pytest.mark.parametrize(
    "raw",
    [
        f"postgresql://u:{SECRET}@host/db",
        f"postgresql//u:{SECRET}@host/db",
        f"postgresql:u:{SECRET}@host/db",
        f"u:{SECRET}@host",
        f"postgresql://u:pa:ss{SECRET}@host/db",
        f"postgresql://u:pa/ss{SECRET}@host/db",
        f"postgresql://u:pa@ss{SECRET}@host/db",
        f"postgresql://u:pa//{SECRET}@host/db",
        f"postgresql://u@host/db?password={SECRET}",
        f"postgresql://u@host/db?sslmode=require&PASSWORD={SECRET}",
        f"mysql+pymysql://root:{SECRET}@localhost/x",
        f"://:{SECRET}@",
    ],
)
def test_redact_hides_passwords_in_malformed_urls(raw: str) -> None:
    shown = redact(raw)
    assert SECRET not in shown
    assert "***" in shown


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (f"postgresql://u:{SECRET}@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u@host/db", "postgresql://u@host/db"),
        ("foo:bar", "foo:bar"),
        ("sqlite:////tmp/a@b/flowdb.db", "sqlite:////tmp/a@b/flowdb.db"),
        ("", ""),
    ],
)
def test_redact_keeps_what_is_not_a_password(raw: str, shown: str) -> None:
    assert redact(raw) == shown


def test_redact_message_hides_urls_and_settings_inside_text() -> None:
    message = (
        f"could not use postgresql://u:{SECRET}@h/db nor host=h password={SECRET} user=u; "
        "see /tmp/a@b and user@example.com"
    )
    shown = redact_message(message)

    assert SECRET not in shown
    assert "postgresql://u:***@h/db" in shown
    assert "password=*** user=u" in shown
    assert "/tmp/a@b and user@example.com" in shown


#: A MariaDB URL with a password that no message may show.
MARIADB = f"mariadb://u:{SECRET}@h/db"
#: How the refusal of a NUL character names the database part of a URL.
IN_THE_DATABASE = "in the database (name or file path)"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("foo:bar", ("'foo:bar'", "malformed", "FLOWDB_DATABASE_URL", "sqlite:///")),
        ("", ("malformed",)),
        ("mssql://root@localhost/x", ("'mssql'", "does not support", "sqlite://", "postgresql://")),
        ("postgresql+pg9000://u@h/db", ("'postgresql+pg9000'", "does not support")),
        ("sqlite+pysqlcipher:///x.db", ("does not support",)),
        ("postgresql://host", ("names no database", "add one after the host")),
        ("postgresql://u@host:5432/", ("names no database",)),
        (f"postgresql://u:{SECRET}@host", ("names no database", "'postgresql://u:***@host'")),
        (f"postgresql//u:{SECRET}@host/db", ("malformed",)),
        (f"mssql://u:{SECRET}@host/db", ("does not support", "mssql://u:***@host/db")),
        (f"postgresql://u:p@{SECRET}@host/db", ("'@'", "%40")),
        ("postgresql://u@host/flowdb%00x", ("NUL character (%00)", IN_THE_DATABASE)),
        (f"postgresql://u%00v:{SECRET}@host/db", ("NUL character", "the user name", "u%00v")),
        (f"postgresql://u:{SECRET}%00@host/db", ("NUL character", "the password", ":***@")),
        ("postgresql://u@h/db?application_name=a%00b", ("the parameter 'application_name'",)),
        ("mysql+pymysql://root@h/flowdb%00x", ("NUL character", IN_THE_DATABASE)),
        ("sqlite:///tmp/x%00y.db", ("NUL character", IN_THE_DATABASE)),
        ("sqlite:////tmp/x\x00y.db", ("NUL character", IN_THE_DATABASE)),  # not escaped
        # MariaDB's parameters PyMySQL cannot take ended in a traceback (TypeError,
        # ValueError) or a message about the database's path.
        (f"{MARIADB}?frob=1", ("the parameter 'frob'", "PyMySQL", "remove it")),
        (f"{MARIADB}?connect_timeout=nan", ("connect_timeout='nan'", "from 1 to 31536000")),
        (f"{MARIADB}?connect_timeout=0", ("connect_timeout='0'", "whole number of seconds")),
        (f"{MARIADB}?connect_timeout=31536001", ("from 1 to 31536000",)),
        (f"{MARIADB}?read_timeout=-1", ("read_timeout='-1'", "1 or more")),
        (f"{MARIADB}?write_timeout=2.5", ("write_timeout='2.5'", "whole number")),
        (f"{MARIADB}?ssl_ca=/no/such/ca.pem", ("ssl_ca='/no/such/ca.pem'", "no such file")),
    ],
)
def test_unusable_urls_raise_one_line_configuration_errors(
    raw: str, words: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_database_url(raw)

    message = str(caught.value)
    assert "\n" not in message
    assert SECRET not in message
    for word in words:
        assert word in message, message
    assert caught.value.exit_code == 2


# --- one URL, two drivers: parameters translated for each ------------------------------


def connect_args(raw: str) -> dict[str, object]:
    """What the server's asyncpg engine would be given for ``raw``."""
    from flowdb.database.dialects.postgresql import _asyncpg_connect_args

    database = Database.from_url(raw)
    return _asyncpg_connect_args(database.url, database.url.redacted())


def test_libpq_parameters_become_asyncpg_arguments() -> None:
    args = connect_args(
        "postgresql://u@h/db?sslmode=disable&connect_timeout=3&application_name=x"
        "&options=-c%20search_path%3Dflows&target_session_attrs=read-write"
    )
    assert args == {
        "ssl": "disable",
        "timeout": 3.0,
        "server_settings": {"application_name": "x", "search_path": "flows"},
        "target_session_attrs": "read-write",
    }


def test_asyncpg_parameters_become_libpq_ones_for_migrations() -> None:
    database = Database.from_url("postgresql+asyncpg://u@h/db?ssl=disable&timeout=4")
    assert dict(database.dialect.sync_url.query) == {"sslmode": "disable", "connect_timeout": "4"}
    assert connect_args("postgresql+asyncpg://u@h/db?ssl=disable&timeout=4") == {
        "ssl": "disable",
        "timeout": 4.0,
    }


def test_no_limit_in_the_url_is_no_limit_for_the_server_too(postgres_url: str) -> None:
    """libpq reads connect_timeout=0 as "wait without a limit"; asyncpg, given 0, gave
    up at once, so the URL that migrated the database could not serve it."""
    import asyncio

    import asyncpg

    args = connect_args(f"{postgres_url}?connect_timeout=0&command_timeout=0")
    assert args == {"timeout": math.inf}
    url = sa.make_url(postgres_url)

    async def connect() -> int:
        connection = await asyncpg.connect(
            host=url.host, port=url.port, user=url.username, database=url.database, **args
        )
        try:
            return int(await connection.fetchval("SELECT 1"))
        finally:
            await connection.close()

    assert asyncio.run(connect()) == 1


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("postgresql://u@h/db?sslmode=sometimes", ("sslmode='sometimes'", "verify-full")),
        ("postgresql://u@h/db?connect_timeout=soon", ("connect_timeout='soon'", "seconds")),
        ("postgresql://u@h/db?connect_timeout=nan", ("connect_timeout='nan'", "0 or more")),
        ("postgresql://u@h/db?connect_timeout=-5", ("connect_timeout='-5'", "0 or more")),
        ("postgresql+asyncpg://u@h/db?timeout=inf", ("timeout='inf'", "(0: no limit)")),
        ("postgresql://u@h/db?command_timeout=-1", ("command_timeout='-1'", "seconds")),
        ("postgresql://u@h/db?frobnicate=1", ("'frobnicate'", "remove it")),
        ("postgresql://u@h/db?options=search_path", ("options=", "-c name=value")),
    ],
)
def test_parameters_no_driver_can_use_are_refused_in_one_line(
    raw: str, words: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_database_url(raw)
    for word in words:
        assert word in str(caught.value)


def test_mariadb_parameters_pymysql_takes_are_accepted(tmp_path: Path) -> None:
    import inspect

    import pymysql  # type: ignore[import-untyped]

    from flowdb.database.dialects.mysql.parameters import KNOWN

    signature = set(inspect.signature(pymysql.connections.Connection.__init__).parameters)
    not_text = {"self", "host", "user", "password", "passwd", "database", "db", "port"}
    not_text |= {"conv", "cursorclass", "ssl"}
    gathered_by_sqlalchemy = {"ssl_capath", "ssl_check_hostname", "ssl_cipher"}
    assert KNOWN - gathered_by_sqlalchemy == signature - not_text
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    query = f"connect_timeout=31536000&read_timeout=30&charset=utf8mb4&ssl_ca={ca}"
    assert parse_database_url(f"mariadb://u@h/db?{query}").database == "db"


@pytest.mark.parametrize(
    "raw",
    [
        "sqlite:////var/lib/flowdb/flowdb.db",
        "sqlite+pysqlite:////tmp/with space/x.db",
        "sqlite+aiosqlite:///relative/x.db",
        "sqlite:///",
        "postgresql:///flowdb",
        # Not plain (SQLAlchemy parses them): a query, percent escapes, colons, a host.
        "sqlite:////tmp/a%25b.db",
        "sqlite:///file:/tmp/x.db?mode=ro&uri=true",
        "sqlite:///:memory:",
        "postgresql+psycopg://u:p@h:5432/db?sslmode=disable",
    ],
)
def test_urls_read_without_sqlalchemy_read_as_sqlalchemy_reads_them(raw: str) -> None:
    from sqlalchemy.engine import make_url

    parsed = parse_database_url(raw)
    reference = make_url(raw)

    assert parsed.backend == reference.get_backend_name()
    assert parsed.driver == reference.drivername.partition("+")[2]
    assert parsed.database == reference.database
    assert parsed.redacted() == reference.render_as_string(hide_password=True).replace(
        ":p@", ":***@"
    )

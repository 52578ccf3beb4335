"""Connecting to MariaDB and MySQL: URLs, engines, the server's version and character set.

PyMySQL for migrations and one-off commands, aiomysql for the API server; always
``utf8mb4``, UTC sessions, a connect timeout so that an unreachable server fails fast.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

from flowdb.database.dialects.base import Dialect, first_line, validate_server_url
from flowdb.database.dialects.mysql.parameters import check_parameters
from flowdb.database.urls import DatabaseUrl
from flowdb.errors import UnsupportedServerError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

CONNECT_TIMEOUT_SECONDS = 10
#: Oldest servers flowdb supports: (major, minor).
#: 10.7 brought the native ``uuid`` column type that flowdb's MariaDB schema uses.
MINIMUM_MARIADB = (10, 7)
MINIMUM_MYSQL = (8, 0)


class MysqlConnecting(Dialect):
    """MySQL's identity, URLs and engines (the first layer of ``MysqlDialect``)."""

    name: ClassVar[str] = "mysql"
    label: ClassVar[str] = "MySQL"
    drivers: ClassVar[frozenset[str]] = frozenset({"", "pymysql", "aiomysql"})
    sync_driver: ClassVar[str] = "mysql+pymysql"
    async_driver: ClassVar[str] = "mysql+aiomysql"
    #: The server's dump tool, named in a downgrade's plan.
    dump_tool: ClassVar[str] = "mysqldump"
    schema_function: ClassVar[str] = "DATABASE()"

    @classmethod
    def validate_url(cls, url: DatabaseUrl, shown: str) -> None:
        """A database name is required, a bare ``@`` in the password and parameters the
        driver cannot take are refused (``parameters.check_parameters``)."""
        validate_server_url(url, shown, f"{cls.name}+pymysql://user@host:3306/flowdb")
        check_parameters(url, shown)

    # --- engines ------------------------------------------------------------------------

    @property
    def sync_url(self) -> Any:
        """PyMySQL, utf8mb4."""
        query = {**self.url.url.query, "charset": "utf8mb4"}
        return self._driver_password(self.url.url.set(drivername=self.sync_driver, query=query))

    @property
    def async_url(self) -> Any:
        """aiomysql, utf8mb4."""
        query = {**self.url.url.query, "charset": "utf8mb4"}
        return self._driver_password(self.url.url.set(drivername=self.async_driver, query=query))

    @staticmethod
    def _driver_password(url: Any) -> Any:
        """``url`` with a non-ASCII password in the form PyMySQL and aiomysql send right.

        Both drivers encode a text password as latin-1, while the server compares it
        with the UTF-8 bytes it was set from (utf8mb4 clients): a correct non-ASCII
        password would be refused as wrong. Its UTF-8 bytes read as latin-1 are sent as
        those bytes.
        """
        password = url.password
        if password is None or password.isascii():
            return url
        return url.set(password=password.encode("utf-8").decode("latin-1"))

    def create_sync_engine(self, application_name: str, program_name: str = "") -> Engine:
        """PyMySQL, unpooled, UTC sessions, a connect timeout, the DDL lock wait bounded.

        ``program_name`` is sent as the connection attribute of that name. Connections
        share one preferred-mode TLS context per process (``tls``): unpooled, each
        connection would otherwise load the system's CA certificates again.
        """
        from sqlalchemy import create_engine, event
        from sqlalchemy.pool import NullPool

        lock_wait = max(1, round(self.settings.migration_ddl_lock_timeout))
        # The history's SQL is standard: || concatenates, double quotes name things.
        init = (
            f"SET time_zone = '+00:00', lock_wait_timeout = {lock_wait}, "
            "sql_mode = CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,ANSI_QUOTES')"
        )
        connect_args: dict[str, Any] = {"init_command": init}
        if program_name:
            connect_args["program_name"] = program_name
        if "connect_timeout" not in self.url.url.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        engine = create_engine(self.sync_url, poolclass=NullPool, connect_args=connect_args)
        event.listen(engine, "do_connect", _connect_sharing_tls)
        return engine

    def create_async_engine(self, *, write: bool) -> AsyncEngine:
        """aiomysql with UTC sessions; one engine serves reads and writes."""
        from sqlalchemy.ext.asyncio import create_async_engine

        return create_async_engine(
            self.async_url,
            pool_pre_ping=True,
            pool_recycle=3600,
            connect_args={"init_command": "SET time_zone = '+00:00'"},
        )

    def check_migratable(self) -> None:
        """Refuse a server older than MariaDB 10.7 / MySQL 8.0, or a non-utf8mb4 database."""
        import sqlalchemy as sa

        engine = self.create_sync_engine("flowdb-check")
        try:
            with engine.connect() as connection:
                version = str(connection.execute(sa.text("SELECT VERSION()")).scalar())
                charset = connection.execute(
                    sa.text(
                        "SELECT default_character_set_name FROM information_schema.schemata "
                        "WHERE schema_name = DATABASE()"
                    )
                ).scalar()
        except Exception as exc:
            translated = self.translate_error(exc, first_line(exc))
            if translated is None:
                raise
            raise translated from None
        finally:
            engine.dispose()
        problem = server_problem(version)
        if problem:
            raise UnsupportedServerError(
                f"The server of {self.url.redacted()} runs {problem}; flowdb needs MariaDB "
                f"{'.'.join(map(str, MINIMUM_MARIADB))} or MySQL "
                f"{'.'.join(map(str, MINIMUM_MYSQL))} or newer."
            )
        if charset != "utf8mb4":
            database = self.url.url.database
            raise UnsupportedServerError(
                f"The database {database!r} at {self.url.redacted()} has the default "
                f"character set {charset!r}; flowdb needs utf8mb4: run ALTER DATABASE "
                f"`{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci (or create "
                "it with that character set)."
            )

    # --- reading without writing ----------------------------------------------------------


def _connect_sharing_tls(_dialect: Any, _record: Any, args: Any, kwargs: Any) -> Any:
    """SQLAlchemy's ``do_connect`` hook: PyMySQL's connection, with the shared TLS context."""
    from flowdb.database.dialects.mysql import tls

    return tls.connect(*args, **kwargs)


def server_problem(version: str) -> str:
    """What is too old about a server ``VERSION()`` string, or ``""`` when it will do."""
    found = re.match(r"(\d+)\.(\d+)", version)
    if not found:
        return ""
    number = (int(found.group(1)), int(found.group(2)))
    if "mariadb" in version.lower():
        return f"MariaDB {version}" if number < MINIMUM_MARIADB else ""
    return f"MySQL {version}" if number < MINIMUM_MYSQL else ""

"""Fresh databases for benchmark runs: SQLite files in a scratch folder, PostgreSQL and
MariaDB databases."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

ADMIN_URL = os.environ.get(
    "FLOWDB_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

MARIADB_ADMIN_URL = os.environ.get(
    "FLOWDB_BENCH_MARIADB_URL", "mariadb+pymysql://root@127.0.0.1:3306/mysql"
)


class Scratch:
    """Creates and cleans up the databases of one benchmark run."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="flowdb-bench-"))
        self.postgres_names: list[str] = []
        self.mariadb_names: list[str] = []
        self.admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.mariadb_admin = sa.create_engine(MARIADB_ADMIN_URL, isolation_level="AUTOCOMMIT")

    def sqlite_url(self) -> str:
        """A URL for a new SQLite file (not yet created)."""
        return f"sqlite:///{self.folder / f'{uuid.uuid4().hex[:8]}.db'}"

    def postgres_url(self, template: str | None = None) -> str:
        """A new empty PostgreSQL database, or a copy of ``template``'s database."""
        name = f"flowdb_bench_{uuid.uuid4().hex[:10]}"
        clause = f' TEMPLATE "{sa.make_url(template).database}"' if template else ""
        with self.admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"{clause}'))
        self.postgres_names.append(name)
        return sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def mariadb_url(self) -> str:
        """A new empty utf8mb4 database on the MariaDB server."""
        name = f"flowdb_bench_{uuid.uuid4().hex[:10]}"
        with self.mariadb_admin.connect() as connection:
            connection.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        self.mariadb_names.append(name)
        url = sa.make_url(MARIADB_ADMIN_URL).set(database=name)
        return url.render_as_string(hide_password=False)

    def new_url(self, dialect: str) -> str:
        """A new empty database of ``dialect`` ("sqlite", "postgresql" or "mariadb")."""
        if dialect == "mariadb":
            return self.mariadb_url()
        return self.sqlite_url() if dialect == "sqlite" else self.postgres_url()

    def copy(self, url: str) -> str:
        """A copy of the database at ``url`` (file copy, PostgreSQL template, MariaDB tables)."""
        if url.startswith("mariadb"):
            return self._copy_mariadb(url)
        if url.startswith("sqlite"):
            target = self.sqlite_url()
            shutil.copyfile(sa.make_url(url).database or "", sa.make_url(target).database or "")
            return target
        return self.postgres_url(template=url)

    def drop(self, url: str) -> None:
        """Remove one database now (big ones should not wait for the end of the run)."""
        if url.startswith("sqlite"):
            Path(sa.make_url(url).database or "").unlink(missing_ok=True)
            return
        if url.startswith("mariadb"):
            self._drop_mariadb(str(sa.make_url(url).database))
            return
        name = sa.make_url(url).database
        with self.admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if name in self.postgres_names:
            self.postgres_names.remove(name)

    def _copy_mariadb(self, url: str) -> str:
        """Every table of ``url``'s database re-created (with its keys) and filled."""
        source = str(sa.make_url(url).database)
        target = self.mariadb_url()
        name = str(sa.make_url(target).database)
        with self.mariadb_admin.connect() as connection:
            tables = connection.execute(
                sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": source},
            ).scalars()
            connection.execute(sa.text("SET foreign_key_checks = 0"))
            connection.execute(sa.text(f"USE `{name}`"))
            for table in list(tables):
                create = connection.execute(sa.text(f"SHOW CREATE TABLE `{source}`.`{table}`"))
                connection.execute(sa.text(create.one()[1].replace(":", "\\:")))
                connection.execute(
                    sa.text(f"INSERT INTO `{name}`.`{table}` SELECT * FROM `{source}`.`{table}`")
                )
            connection.execute(sa.text("SET foreign_key_checks = 1"))
        return target

    def _drop_mariadb(self, name: str) -> None:
        with self.mariadb_admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        if name in self.mariadb_names:
            self.mariadb_names.remove(name)

    def close(self) -> None:
        """Drop every database this run made and remove the scratch folder."""
        for name in list(self.mariadb_names):
            self._drop_mariadb(name)
        self.mariadb_admin.dispose()
        for name in list(self.postgres_names):
            with self.admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def scratch() -> Iterator[Scratch]:
    """A ``Scratch`` that cleans up after itself."""
    holder = Scratch()
    try:
        yield holder
    finally:
        holder.close()


def flowdb_env(url: str, home: Path | None = None) -> dict[str, str]:
    """The environment for a flowdb subprocess working on ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDB_")}
    env["FLOWDB_DATABASE_URL"] = url
    if home is not None:
        env["FLOWDB_HOME"] = str(home)
    return env


def postgres_version() -> str | None:
    """The PostgreSQL server's version, or None if it cannot be reached."""
    engine = sa.create_engine(ADMIN_URL)
    try:
        with engine.connect() as connection:
            return str(connection.execute(sa.text("SHOW server_version")).scalar())
    except sa.exc.OperationalError:
        return None
    finally:
        engine.dispose()


def execute_script(url: str, sql: str) -> None:
    """Run a SQL script straight through the driver in one transaction (the floor)."""
    if url.startswith("sqlite"):
        import sqlite3

        lite = sqlite3.connect(sa.make_url(url).database or "", isolation_level=None)
        try:
            lite.executescript(f"BEGIN;\n{sql}\nCOMMIT;")
        finally:
            lite.close()
        return
    if url.startswith("mariadb"):
        from bench.floor import run_mariadb_script

        run_mariadb_script(url, sql)
        return
    import psycopg

    conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as connection:
        # A trusted script (flowdb's own dry-run output), run as one simple query.
        connection.execute(sql)

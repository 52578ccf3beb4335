"""The rules of the layout, checked: one Database value passed down, dialects in their modules.

See ARCHITECTURE.md. Each rule is checked on the code itself (its syntax tree) or by
counting what one command does, so a change that breaks a rule fails here first.
"""

from __future__ import annotations

import ast
import asyncio
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

import flowdb
from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.settings import Settings
from tests.dbtools import revision_of

SOURCE = Path(flowdb.__file__).parent
DIALECTS = SOURCE / "database" / "dialects"
DIALECT_NAMES = {"sqlite", "postgresql", "postgres", "mysql", "mariadb"}
DIALECT_QUESTIONS = {"is_sqlite", "is_postgresql", "is_mysql", "dialect_name"}


def python_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py") if "versions" not in path.parts)


def dialect_questions(path: Path) -> list[str]:
    """Places in ``path`` that compare with a dialect's name or ask ``is_<dialect>``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            names = {o.value for o in operands if isinstance(o, ast.Constant)}
            if names & DIALECT_NAMES:
                found.append(f"{path.name}:{node.lineno}")
        elif isinstance(node, ast.Attribute | ast.Name):
            name = node.attr if isinstance(node, ast.Attribute) else node.id
            if name in DIALECT_QUESTIONS:
                found.append(f"{path.name}:{node.lineno} ({name})")
    return found


def test_no_code_outside_the_dialect_modules_asks_which_dialect_it_is_on() -> None:
    offenders = [
        place
        for path in python_files(SOURCE)
        if DIALECTS not in path.parents
        for place in dialect_questions(path)
    ]
    assert offenders == []


def test_the_check_finds_a_dialect_question(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f(d):\n    return d.name == 'sqlite' or d.is_postgresql\n")
    assert len(dialect_questions(sample)) == 2


def test_the_cli_imports_no_private_name_of_the_database_package() -> None:
    private = []
    for path in python_files(SOURCE / "cli"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flowdb."):
                private += [
                    f"{path.name}:{node.lineno} {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_")
                ]
    assert private == []


def test_errors_sit_at_the_bottom_of_the_package() -> None:
    # errors.py is imported by everything; it may import only the redaction leaf.
    tree = ast.parse((SOURCE / "errors.py").read_text(encoding="utf-8"))
    imports = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert {module for module in imports if module.startswith("flowdb")} == {"flowdb.redaction"}


def test_an_upgrade_reads_the_settings_and_the_revision_once(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowdb import settings
    from flowdb.database import urls
    from flowdb.database.dialects import backends, dialect_class

    calls: Counter[str] = Counter()

    def counted(name: str, function: object) -> object:
        def wrapper(*args: object, **kwargs: object) -> object:
            calls[name] += 1
            return function(*args, **kwargs)  # type: ignore[operator]

        return wrapper

    monkeypatch.setattr(settings, "get_settings", counted("settings", settings.get_settings))
    monkeypatch.setattr(urls, "parse_database_url", counted("url", urls.parse_database_url))
    for name in backends():
        dialect = dialect_class(name)
        assert dialect is not None
        if "read_catalog" in vars(dialect):  # once where it is defined (MariaDB's is MySQL's)
            monkeypatch.setattr(dialect, "read_catalog", counted("revision", dialect.read_catalog))

    alembic_upgrade()

    assert calls == {"settings": 1, "url": 1, "revision": 1}
    assert revision_of(configured) is not None


def test_create_app_honours_the_settings_it_is_given(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowdb.server.app import create_app

    # The environment names another database and another timeout: both must be ignored.
    monkeypatch.setenv("FLOWDB_DATABASE_URL", f"sqlite:///{tmp_path / 'not-this.db'}")
    monkeypatch.setenv("FLOWDB_SERVER_QUERY_TIMEOUT", "30")
    given = Settings(database_url=postgres_url, server_query_timeout=2.5, migrate_on_start=False)

    app = create_app(given)
    database = app.state.database

    async def server_timeout() -> str:
        try:
            async with database.session() as session:
                return str(await session.scalar(sa.text("SHOW statement_timeout")))
        finally:
            await database.dispose()

    assert database.database.settings is given
    assert database.database.url.url.database == sa.make_url(postgres_url).database
    assert asyncio.run(server_timeout()) == "2500ms"
    assert not (tmp_path / "not-this.db").exists()


def test_the_readme_lists_every_exit_code() -> None:
    from flowdb.errors import ExitCode

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Errors and exit codes", 1)[1].split("\n## ", 1)[0]
    cells = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("|")]
    listed = {int(cell) for cell in cells if cell.isdigit()}
    assert listed == {int(code) for code in ExitCode}

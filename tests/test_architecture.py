"""The rules of the layout, checked: one Database value passed down, dialects in their modules.

See ARCHITECTURE.md. Each rule is checked on the code itself (its syntax tree) or by
counting what one command does, so a change that breaks a rule fails here first.
"""

from __future__ import annotations

import ast
import asyncio
import typing
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


def module_name(path: Path, root: Path) -> str:
    """``flowdb.database.target`` for ``<root>/flowdb/database/target.py`` (packages without
    ``__init__``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Which modules of ``package`` each of its modules imports, read with ``ast``.

    Every import counts: at module level, inside functions (lazy ones included) and
    under ``if TYPE_CHECKING:``. ``from a import b`` is an edge to ``a.b`` when that is
    a module, else to ``a``. The parent packages an import runs implicitly are not
    edges (a package's ``__init__`` may re-export its modules).
    """
    paths = {module_name(path, package.parent): path for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package_name = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                stem = node.module or ""
                if node.level:
                    parts = package_name.split(".")
                    base = parts[: len(parts) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                found = [
                    f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in paths else stem
                    for alias in node.names
                ]
            else:
                continue
            targets |= {target for target in found if target in paths and target != name}
        graph[name] = targets
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``a -> b -> a``) in each strongly connected group of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while (member := stack.pop()) != node:
                group.add(member)
            group.add(node)
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles = []
    for group in groups:
        start = min(group)
        path, node = [start], start
        while True:  # walk inside the group until a module repeats: that is a cycle
            node = min(target for target in graph[node] if target in group)
            if node in path:
                cycles.append([*path[path.index(node) :], node])
                break
            path.append(node)
    return cycles


def test_imports_go_one_way_no_cycle_anywhere_in_flowdb() -> None:
    cycles = import_cycles(import_graph(SOURCE))
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


#: What the dialect packages may import of flowdb: the leaves below them, and each other.
DIALECT_FOUNDATIONS = {
    "flowdb.errors",
    "flowdb.redaction",
    "flowdb.settings",
    "flowdb.database.lockinfo",
    "flowdb.database.tables",
    "flowdb.database.urls",
}


def test_the_dialects_sit_on_the_leaves_only() -> None:
    graph = import_graph(SOURCE)
    above = {
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name.startswith("flowdb.database.dialects")
        for target in targets
        if not target.startswith("flowdb.database.dialects") and target not in DIALECT_FOUNDATIONS
    }
    assert above == set()
    for leaf in ("flowdb.database.lockinfo", "flowdb.database.tables"):
        assert graph[leaf] == set()


def test_the_cycle_check_finds_a_cycle_through_a_function_and_type_checking(
    tmp_path: Path,
) -> None:
    package = tmp_path / "sample"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from sample import b\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n"
    )
    (package / "c.py").write_text("from sample.a import f\n")
    (package / "d.py").write_text("import sample.a\n")
    graph = import_graph(package)
    assert graph["sample.d"] == {"sample.a"}
    assert import_cycles(graph) == [["sample.a", "sample.b", "sample.c", "sample.a"]]


def test_annotations_resolve_at_run_time() -> None:
    from flowdb.database.dialects.base import Catalog, Dialect
    from flowdb.database.lockinfo import Waiter
    from flowdb.database.status import SchemaStatus
    from flowdb.database.target import Database

    assert typing.get_type_hints(Dialect.read_catalog) == {"waiter": Waiter, "return": Catalog}
    assert typing.get_type_hints(Database.status) == {"return": SchemaStatus}


def test_no_module_of_flowdb_is_long_without_a_reason() -> None:
    """Modules stay small (about 400 lines); a longer one says why at its top."""
    long = [
        f"{path.relative_to(SOURCE)}: {lines} lines"
        for path in python_files(SOURCE)
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 420
        and "Longer than" not in path.read_text(encoding="utf-8")[:3000]
    ]
    assert long == []


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
    from flowdb.database import dialects
    from flowdb.database.dialects import backends, dialect_class

    calls: Counter[str] = Counter()

    def counted(name: str, function: object) -> object:
        def wrapper(*args: object, **kwargs: object) -> object:
            calls[name] += 1
            return function(*args, **kwargs)  # type: ignore[operator]

        return wrapper

    monkeypatch.setattr(settings, "get_settings", counted("settings", settings.get_settings))
    monkeypatch.setattr(dialects, "parse_database_url", counted("url", dialects.parse_database_url))
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

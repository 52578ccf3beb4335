"""The migration lint gate: what each revision's PostgreSQL SQL does to a live database.

``flowdb database lint`` renders every revision's upgrade for PostgreSQL (the SQL
``upgrade --dry-run -r PARENT:REVISION`` prints) and checks it two ways:

* with squawk (``squawk-cli``), a real PostgreSQL migration linter: locks taken
  without need, indexes built without ``CONCURRENTLY``, constraints validated under a
  strong lock, NOT NULL columns added to existing tables, type changes that rewrite;
* with flowdb's own rules, which a SQL linter cannot see: a data statement on a table
  that grows inside a transaction that changed a table's definition (the backfill
  would run under the DDL's strong lock), and each revision's ``SERVES_PREVIOUS_CODE``
  declaration against what its SQL does (drops, renames, NOT NULL and new constraints
  on existing tables break the previous release's code);
* and one rule on the head schema (the models, which ``check`` holds equal to it):
  every foreign key has a covering index (``fk-without-index``), an index or unique
  constraint whose leading columns are the key's. Without one, deleting a parent row
  scans the child table for each row (Airflow's ``db clean``: 6 min per 1000 rows
  before two such indexes, under 2 after), and ``flowdb database clean`` deletes
  through every one of them. Reported against the head revision.

Exceptions are explicit: a revision lists the rules it may break, each with its reason,
in ``LINT_ALLOW = {"rule": "why"}`` (for example a new, empty table). The SQL is linted
as flowdb runs it: every migration connection sets ``lock_timeout`` (modelled by a
``SET`` line at the top of each file).
"""

from __future__ import annotations

import ast
import io
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flowdb.database.planning import Plan
from flowdb.database.runner import render_sql
from flowdb.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy import MetaData

    from flowdb.database.history import Revision
    from flowdb.database.target import Database

#: Squawk rules flowdb does not apply, and why (the same for every revision).
NOT_APPLIED = {
    # flowdb's migrations have no statement timeout on purpose (a cancelled index
    # build wastes the work); FLOWDB_MIGRATION_STATEMENT_TIMEOUT sets one if wanted.
    "require-statement-timeout",
    # Each step is a transaction, and OnlineMigration makes every phase rerunnable with
    # checks it does online (an INVALID index is dropped and rebuilt, columns and
    # tables are looked up), which squawk cannot see in the SQL.
    "prefer-robust-stmts",
    # Column types follow the models (VARCHAR(255) names, INTEGER counters, UUID keys).
    "prefer-text-field",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
}
#: Squawk's rules about breaking the previous release's code: they apply to revisions that
#: declare SERVES_PREVIOUS_CODE = True; the others say so already.
COMPATIBILITY_RULES = {
    "ban-drop-column",
    "ban-drop-table",
    "ban-drop-constraint",
    "ban-drop-function",
    "ban-drop-not-null",
    "renaming-column",
    "renaming-table",
}
#: Tables that grow with use: their data moves only in batches outside DDL transactions.
GROWING_TABLES = frozenset(
    {"flow_run", "task_run", "flow_run_state", "task_run_state", "log", "artifact"}
)
#: What the previous release's code cannot survive.
_BREAKS_PREVIOUS_CODE = re.compile(
    r"DROP COLUMN|DROP TABLE|RENAME|SET NOT NULL|ALTER COLUMN \w+ TYPE|"
    r"ADD CONSTRAINT \w+ (?:UNIQUE|CHECK)|FOREIGN KEY ?\((?P<column>\w+)\)",
    re.IGNORECASE,
)
#: A statement that changes a definition (under a strong lock), and the object it names.
_DDL = re.compile(
    r"^\s*(?:ALTER TABLE|CREATE (?:UNIQUE )?INDEX (?!CONCURRENTLY)"
    r"|DROP INDEX (?!CONCURRENTLY)|CREATE TRIGGER)\s+(?:IF (?:NOT )?EXISTS\s+)?(?P<name>\w+)",
    re.IGNORECASE,
)
#: A statement that moves data, and the table it reads or writes.
_DATA = re.compile(
    r"^\s*(?:UPDATE (?P<update>\w+)|INSERT INTO \w+ .*? FROM (?P<insert>\w+)"
    r"|DELETE FROM (?P<delete>\w+))",
    re.IGNORECASE | re.DOTALL,
)
_RENDER_FOR = "postgresql+psycopg://lint@localhost/lint"
_PREAMBLE = "SET lock_timeout = '1s';\n"


@dataclass(frozen=True)
class Finding:
    """One problem in one revision's SQL."""

    revision: str
    rule: str
    message: str
    line: int = 0

    def describe(self) -> str:
        """``2c9f4d1a8e65:35 require-concurrent-index-deletion: ...``."""
        where = f"{self.revision}:{self.line}" if self.line else self.revision
        return f"{where} {self.rule}: {self.message}"


def lint(database: Database, revisions: list[Revision] | None = None) -> list[Finding]:
    """Every finding in ``revisions`` (default: the whole history), allowances applied."""
    squawk = shutil.which("squawk")
    if squawk is None:
        raise ConfigurationError(
            "The lint gate needs squawk, PostgreSQL's migration linter; install it with "
            "pip install squawk-cli (it comes with flowdb's test extras)."
        )
    findings: list[Finding] = []
    for revision in revisions or list(database.history.revisions):
        sql = _render(database, revision)
        allowed = _allowances(revision.path)
        not_applied = set(allowed)
        if revision.phase == "contract":
            not_applied |= COMPATIBILITY_RULES
        findings += _squawk(squawk, revision.id, sql, not_applied)
        findings += _backfills_in_ddl_transactions(revision.id, sql, allowed)
        findings += _declaration(revision, sql, allowed)
        findings += _expand_rebuilds(revision, allowed)
        if revision.id == database.history.head:
            findings += foreign_keys_without_index(revision.id)
    return findings


def foreign_keys_without_index(revision: str, metadata: MetaData | None = None) -> list[Finding]:
    """Foreign keys of the head schema (``metadata``: the models) no index covers."""
    from sqlalchemy import PrimaryKeyConstraint, UniqueConstraint

    if metadata is None:
        from flowdb.database.orm_models import Base

        metadata = Base.metadata
    findings = []
    for table in metadata.sorted_tables:
        leading = [tuple(c.name for c in index.columns) for index in table.indexes]
        leading += [
            tuple(c.name for c in constraint.columns)
            for constraint in table.constraints
            if isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint)
        ]
        for key in table.foreign_key_constraints:
            columns = tuple(c.name for c in key.columns)
            if not any(found[: len(columns)] == columns for found in leading):
                findings.append(
                    Finding(
                        revision,
                        "fk-without-index",
                        f"{table.name}.{', '.join(columns)} refers to {key.referred_table.name} "
                        "without an index that starts with it: every delete of a "
                        f"{key.referred_table.name} row would scan {table.name}; add one "
                        "(OnlineMigration.create_index)",
                    )
                )
    return findings


def _render(database: Database, revision: Revision) -> str:
    """The revision's upgrade SQL for PostgreSQL, as a dry-run prints it."""
    from sqlalchemy.engine import make_url

    buffer = io.StringIO()
    plan = Plan("upgrade", revision.down_revision, revision.id, (revision,))
    render_sql(database, plan, buffer, dialect_url=make_url(_RENDER_FOR))
    return buffer.getvalue()


def _allowances(path: Path) -> dict[str, str]:
    """The revision's ``LINT_ALLOW`` mapping (rule -> reason), read without importing it."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "LINT_ALLOW" for target in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, dict):
                return {str(rule): str(reason) for rule, reason in value.items()}
    return {}


def _declared_serves_previous_code(path: Path) -> bool | None:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        named = any(isinstance(t, ast.Name) and t.id == "SERVES_PREVIOUS_CODE" for t in targets)
        if named and isinstance(value, ast.Constant) and isinstance(value.value, bool):
            return value.value
    return None


def _squawk(squawk: str, revision: str, sql: str, not_applied: set[str]) -> list[Finding]:
    excluded = sorted(NOT_APPLIED | not_applied)
    with tempfile.TemporaryDirectory(prefix="flowdb-lint-") as folder:
        path = Path(folder) / f"{revision}.sql"
        path.write_text(_PREAMBLE + sql, encoding="utf-8")
        result = subprocess.run(
            [squawk, "--reporter", "json", "--exclude", ",".join(excluded), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    try:
        reported = json.loads(result.stdout or "[]")
    except ValueError:
        raise ConfigurationError(
            f"squawk failed on {revision}'s SQL ({result.stderr.strip()[:200]}); run "
            f"'flowdb database upgrade --dry-run -r {revision}' against PostgreSQL to see it."
        ) from None
    return [
        Finding(revision, item["rule_name"], item["message"], int(item["line"]) - 1)
        for item in reported
    ]


def _backfills_in_ddl_transactions(
    revision: str, sql: str, allowed: dict[str, str]
) -> list[Finding]:
    """Data statements on growing tables in a transaction that also changed a definition."""
    rule = "backfill-in-ddl-transaction"
    if rule in allowed:
        return []
    findings = []
    for block in re.split(r"^COMMIT;\s*$", sql, flags=re.MULTILINE):
        statements = [s.strip() for s in block.split(";\n") if s.strip()]
        changed = [m["name"] for s in statements if (m := _DDL.match(s))]
        if not changed:
            continue
        for statement in statements:
            data = _DATA.match(statement)
            table = data and (data["update"] or data["insert"] or data["delete"])
            if table in GROWING_TABLES:
                findings.append(
                    Finding(
                        revision,
                        rule,
                        f"moves data of {table} in the transaction that changes "
                        f"{', '.join(sorted(set(changed)))}: run it in batches outside "
                        "(OnlineMigration.backfill), or allow it with a reason",
                    )
                )
    return findings


def _declaration(revision: Revision, sql: str, allowed: dict[str, str]) -> list[Finding]:
    """The phase must be declared, consistently, and expand only for expand-only SQL.

    A revision says its phase with ``PHASE = "expand"``/``"contract"`` or (the released
    ones) ``SERVES_PREVIOUS_CODE = True``/``False``; a file with both must not contradict
    itself. An expand revision (the previous release keeps serving) must not drop,
    rename, set NOT NULL or add constraints the previous code would violate.
    """
    declared = _declared_serves_previous_code(revision.path)
    phase = revision.declared_phase
    if declared is None and phase is None:
        return [
            Finding(
                revision.id,
                "serves-previous-code",
                'declares neither PHASE = "expand"/"contract" nor SERVES_PREVIOUS_CODE = '
                "True/False (can the previous release's code keep serving on this schema?)",
            )
        ]
    if declared is not None and phase is not None and declared != (phase == "expand"):
        return [
            Finding(
                revision.id,
                "phase",
                f'declares PHASE = "{phase}" but SERVES_PREVIOUS_CODE = {declared}: an expand '
                "revision serves the previous code, a contract revision does not",
            )
        ]
    scope = _without_new_tables(sql, revision.creates)
    added = set(re.findall(r"ADD COLUMN (?:IF NOT EXISTS )?(\w+)", scope, re.IGNORECASE))
    breaking = next(
        (
            match
            for match in _BREAKS_PREVIOUS_CODE.finditer(scope)
            # A foreign key on a column this revision adds binds only the new code's writes.
            if not (match["column"] and match["column"] in added)
        ),
        None,
    )
    if revision.phase == "expand" and breaking and "serves-previous-code" not in allowed:
        said = f'PHASE = "{phase}"' if phase else "SERVES_PREVIOUS_CODE = True"
        return [
            Finding(
                revision.id,
                "serves-previous-code",
                f"declares {said} but its SQL does '{breaking.group(0)}', which the previous "
                'code cannot survive: move it to a PHASE = "contract" revision',
            )
        ]
    return []


#: Calls that rebuild a table on SQLite (a copy under the strong write lock).
_REBUILDS = frozenset({"batch_alter_table", "add_reference", "set_not_null"})


def _expand_rebuilds(revision: Revision, allowed: dict[str, str]) -> list[Finding]:
    """A revision declaring ``PHASE = "expand"`` must not rebuild a table on SQLite.

    A rebuild copies the table while every writer waits, and it rewrites the table's
    definition from the new code's view: contract-only. ``batch_alter_table`` with
    ``recreate="never"`` does not rebuild. Released revisions (no ``PHASE``) are exempt:
    their files cannot change.
    """
    rule = "expand-rebuilds-table"
    if revision.declared_phase != "expand" or rule in allowed:
        return []
    tree = ast.parse(revision.path.read_text(encoding="utf-8"))
    upgrade = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None
    )
    for node in ast.walk(upgrade) if upgrade is not None else ():
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in _REBUILDS:
            continue
        never = any(
            k.arg == "recreate" and isinstance(k.value, ast.Constant) and k.value.value == "never"
            for k in node.keywords
        )
        if not never:
            return [
                Finding(
                    revision.id,
                    rule,
                    f'declares PHASE = "expand" but calls {name}() (line {node.lineno}), which '
                    'rebuilds the table on SQLite: rebuilds belong in a PHASE = "contract" '
                    "revision",
                    node.lineno,
                )
            ]
    return []


def _without_new_tables(sql: str, created: tuple[str, ...]) -> str:
    """The SQL without statements about tables this revision creates (nothing old uses them)."""
    subject = re.compile(
        r"^\s*(?:CREATE TABLE|ALTER TABLE|CREATE (?:UNIQUE )?INDEX \w+ ON)\s+(\w+)", re.IGNORECASE
    )
    keep = []
    for statement in sql.split(";\n"):
        code = "\n".join(line for line in statement.splitlines() if not line.startswith("--"))
        match = subject.match(code)
        if match and match.group(1) in created:
            continue
        keep.append(statement)
    return ";\n".join(keep)

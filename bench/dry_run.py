"""Case 5: printing the SQL of the whole history (no database needed with an explicit range)."""

from __future__ import annotations

from collections.abc import Callable

from bench.common import PYTHON, Row, interleaved, run
from bench.databases import Scratch, flowdb_env


def bench_dry_run(scratch: Scratch, repeat: int) -> list[Row]:
    """Time upgrade and downgrade dry-runs over the whole history against importing Alembic."""
    cases = {"import alembic.command": [PYTHON, "-c", "import alembic.command"]}
    urls = {dialect: scratch.new_url(dialect) for dialect in ("sqlite", "postgresql")}
    for dialect, url in urls.items():
        for direction, span in (("upgrade", "base:head"), ("downgrade", "head:base")):
            cases[f"{dialect}: {direction} --dry-run -r {span}"] = [
                PYTHON,
                "-m",
                "flowdb",
                "database",
                direction,
                "--dry-run",
                "-r",
                span,
                url,
            ]
    lines: dict[str, int] = {}

    def runner(name: str, args: list[str]) -> Callable[[], None]:
        def call() -> None:
            command, url = (args[:-1], args[-1]) if name != "import alembic.command" else (args, "")
            result = run(command, env=flowdb_env(url) if url else None)
            lines[name] = result.stdout.count("\n")

        return call

    timings = interleaved({name: runner(name, args) for name, args in cases.items()}, repeat)
    baseline = timings.pop("import alembic.command")
    return [
        Row(name, timing, "import alembic.command", baseline, note=f"{lines[name]} lines of SQL")
        for name, timing in timings.items()
    ]

"""Case 9: fresh installs from the snapshot, and their flatness in the length of the history.

* SQLite: ``flowdb database upgrade -y`` on an empty file (a fresh install, new process)
  against ``flowdb --help`` in the same run; target 2×.
* PostgreSQL: the same command against ``psql -f`` of the same SQL (what
  ``upgrade --dry-run`` prints for an empty database, in one transaction); target 2×.
  And both inside this warm process: ``commands.migrate`` against that SQL through
  psycopg.
* Flatness (SQLite, PostgreSQL, MariaDB): a copy of the history with ``EXTRA`` trivial
  revisions appended, its own snapshot generated (as a developer would), then, in this
  process, the fresh install and the replay of both histories on new databases. The
  fresh install stays flat while the replay grows with the history.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from bench.common import Row, Timing, interleaved, run, time_call
from bench.databases import Scratch, execute_script, flowdb_env
from bench.startup import _flowdb_command

EXTRA = 200
TRIVIAL = '''"""Trivial revision {n} of the bench's long history."""

revision = "{rev}"
down_revision = "{down}"
SERVES_PREVIOUS_CODE = True


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''


def bench_fresh_install(
    scratch: Scratch, repeat: int, extra: int = EXTRA, warm_up: bool = True
) -> list[Row]:
    """Time fresh installs against their baselines, and both histories against each other.

    ``warm_up``: one untimed install before the timed ones of each in-process series
    (file hashes, caches); the tiny run skips it (it proves the case runs, not its numbers).
    """
    return [
        _sqlite_against_help(scratch, repeat),
        *_postgres_against_psql(scratch, repeat, warm_up),
        *_flatness(scratch, repeat, extra, warm_up),
    ]


def _sqlite_against_help(scratch: Scratch, repeat: int) -> Row:
    flowdb = _flowdb_command()
    target: dict[str, str] = {}

    def fresh() -> None:
        if "url" in target:
            scratch.drop(target["url"])
        target["url"] = scratch.sqlite_url()

    def upgrade() -> None:
        run([*flowdb, "database", "upgrade", "-y"], env=flowdb_env(target["url"]))

    def help_() -> None:
        run([*flowdb, "--help"], env=flowdb_env(target["url"]))

    timings = interleaved({"upgrade": upgrade, "help": help_}, repeat, setup=fresh)
    return Row(
        "sqlite: flowdb database upgrade -y (fresh install)",
        timings["upgrade"],
        "flowdb --help",
        timings["help"],
        target=2.0,
    )


def _postgres_against_psql(scratch: Scratch, repeat: int, warm_up: bool) -> list[Row]:
    flowdb = _flowdb_command()
    probe = scratch.postgres_url()
    sql = run([*flowdb, "database", "upgrade", "--dry-run"], env=flowdb_env(probe)).stdout
    scratch.drop(probe)
    script = scratch.folder / "fresh-postgresql.sql"
    script.write_text(sql, encoding="utf-8")
    psql = shutil.which("psql") or "psql"
    targets: dict[str, str] = {}

    def fresh() -> None:
        for name in ("cli", "psql"):
            if name in targets:
                scratch.drop(targets[name])
            targets[name] = scratch.postgres_url()

    def upgrade() -> None:
        run([*flowdb, "database", "upgrade", "-y"], env=flowdb_env(targets["cli"]))

    def psql_f() -> None:
        url = targets["psql"].replace("postgresql+psycopg://", "postgresql://")
        run([psql, "-q", "-X", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(script)])

    timings = interleaved({"cli": upgrade, "psql": psql_f}, repeat, setup=fresh)
    for url in targets.values():
        scratch.drop(url)
    api, driver = _postgres_in_process(scratch, sql, repeat, warm_up)
    return [
        Row(
            "postgresql: flowdb database upgrade -y (fresh install)",
            timings["cli"],
            "psql -f of the same SQL",
            timings["psql"],
            target=2.0,
        ),
        Row(
            "postgresql: commands.migrate() in-process (fresh install)",
            api,
            "the same SQL through psycopg, in-process",
            driver,
            target=2.0,
            note="imports paid; lock, status read and install each connect",
        ),
    ]


def _postgres_in_process(
    scratch: Scratch, sql: str, repeat: int, warm_up: bool
) -> tuple[Timing, Timing]:
    """The fresh install and the bare SQL, both inside this warm process."""
    from flowdb.database import commands
    from flowdb.database.target import Database

    body = "\n".join(line for line in sql.splitlines() if line not in ("BEGIN;", "COMMIT;"))
    if warm_up:
        warm = scratch.postgres_url()
        commands.migrate(Database.from_url(warm), "upgrade", "head")
        scratch.drop(warm)
    api, driver = Timing(), Timing()
    for _ in range(repeat):
        url = scratch.postgres_url()
        api.samples.append(
            time_call(partial(commands.migrate, Database.from_url(url), "upgrade", "head"))
        )
        scratch.drop(url)
        url = scratch.postgres_url()
        driver.samples.append(time_call(partial(execute_script, url, body)))
        scratch.drop(url)
    return api, driver


def long_history(folder: Path, extra: int) -> Path:
    """A copy of flowdb's migrations folder with ``extra`` trivial revisions after head."""
    from flowdb.database import history

    copy = folder / f"migrations-{extra}"
    shutil.copytree(history.MIGRATIONS_FOLDER, copy, ignore=shutil.ignore_patterns("__pycache__"))
    down = history.load_history().head
    for n in range(1, extra + 1):
        rev = f"bench{n:07d}"
        path = copy / "versions" / f"2027_01_01_{rev}_trivial_{n}.py"
        path.write_text(TRIVIAL.format(n=n, rev=rev, down=down), encoding="utf-8")
        down = rev
    return copy


@contextmanager
def using(migrations: Path, snapshots: Path) -> Iterator[None]:
    """Point flowdb at another migrations folder and snapshot folder for the block."""
    from flowdb.database import fresh, history

    saved = history.MIGRATIONS_FOLDER, fresh.SNAPSHOT_FOLDER
    history.MIGRATIONS_FOLDER, fresh.SNAPSHOT_FOLDER = migrations, snapshots
    history.forget_history()
    try:
        yield
    finally:
        history.MIGRATIONS_FOLDER, fresh.SNAPSHOT_FOLDER = saved
        history.forget_history()


def _flatness(scratch: Scratch, repeat: int, extra: int, warm_up: bool) -> list[Row]:
    from flowdb.database import commands, fresh, history
    from flowdb.database.target import Database

    short = (history.MIGRATIONS_FOLDER, fresh.SNAPSHOT_FOLDER)
    migrations = long_history(scratch.folder, extra)
    snapshots = scratch.folder / f"snapshots-{extra}"
    rows: list[Row] = []
    for dialect in ("sqlite", "postgresql", "mariadb"):
        with using(migrations, snapshots):
            seed = scratch.new_url(dialect)
            commands.make_snapshot(
                Database.from_url(seed)
            )  # as a developer would, after adding them
            scratch.drop(seed)
        count = {}
        timings: dict[str, Timing] = {}
        for name, (folder, snaps) in {"short": short, "long": (migrations, snapshots)}.items():
            with using(folder, snaps):
                count[name] = len(history.load_history().revisions)
                for mode in ("fresh", "replay"):
                    timing = timings.setdefault(f"{name}-{mode}", Timing())
                    # The first of repeat + 1 warms up (file hashes, caches).
                    for attempt in range(0 if warm_up else 1, repeat + 1):
                        url = scratch.new_url(dialect)
                        database = Database.from_url(url)
                        migrate: Callable[[], object] = partial(
                            commands.migrate,
                            database,
                            "upgrade",
                            "head",
                            use_snapshot=mode == "fresh",
                        )
                        took = time_call(migrate)
                        if attempt:
                            timing.samples.append(took)
                        scratch.drop(url)
        rows += [
            Row(
                f"{dialect}: fresh install, {count['long']} revisions",
                timings["long-fresh"],
                f"fresh install, {count['short']} revisions",
                timings["short-fresh"],
                target=1.5,
                note="in-process; flat in the length of the history",
            ),
            Row(
                f"{dialect}: replay, {count['long']} revisions",
                timings["long-replay"],
                f"replay, {count['short']} revisions",
                timings["short-replay"],
                note="in-process; grows with the history",
            ),
            Row(
                f"{dialect}: fresh install, {count['long']} revisions",
                timings["long-fresh"],
                f"replay, {count['long']} revisions",
                timings["long-replay"],
                note="in-process",
            ),
        ]
    return rows

"""``python -m bench``: run the benchmark cases, print their tables, write bench/results.md.

Options:
  --repeat N      runs per measurement (default 5; 1 with --tiny)
  --tiny          smallest sizes, fewest callers and workers, 1 run: the suite's smoke test
                  (it checks that every case runs and prints its table, not its numbers)
  --scale         the heavy data-migration case (1M flow runs, 200k task runs, 2M logs)
  --cases A,B     only these cases (startup, upgrade, data, concurrency, dryrun, server,
                  online, states, fresh, backup, ready, writes, rolling, expand)
  --output PATH   where to write the Markdown results (default bench/results.md)
  --no-write      print only
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

from bench.common import Row, environment_report, render_table
from bench.databases import Scratch, postgres_version, scratch

ALL_CASES = (
    "startup",
    "upgrade",
    "data",
    "concurrency",
    "dryrun",
    "server",
    "online",
    "states",
    "fresh",
    "backup",
    "ready",
    "writes",
    "rolling",
    "expand",
)


def _cases(args: argparse.Namespace) -> dict[str, tuple[str, Callable[[Scratch], list[Row]]]]:
    from bench.backup import bench_backup
    from bench.concurrency import bench_concurrency
    from bench.data_migrations import bench_data_migrations
    from bench.dry_run import bench_dry_run
    from bench.expand_writes import bench_expand_writes
    from bench.fresh_install import EXTRA, bench_fresh_install
    from bench.online import bench_online_upgrade
    from bench.readiness import bench_readiness
    from bench.rolling import TINY_RUNS, bench_rolling
    from bench.server import bench_server
    from bench.startup import bench_startup
    from bench.state_races import bench_state_races
    from bench.upgrade import bench_upgrade
    from bench.write_tails import bench_write_tails

    repeat = args.repeat
    sizes = (2_000,) if args.tiny else (250_000, 1_000_000) if args.scale else (20_000, 80_000)
    # The crowd of case 4: enough callers to contend for the lock, fewer when tiny.
    crowd = (2, 4) if args.tiny else (8, 32)
    online_sizes = (
        {"postgresql": 2_000, "sqlite": 2_000}
        if args.tiny
        else {"postgresql": 1_000_000, "sqlite": 250_000}
        if args.scale
        else {"postgresql": 100_000, "sqlite": 50_000}
    )
    # Case 6 and 8's server with more than one worker: 2 when tiny (each worker is a
    # process importing the app, on a machine of two cores).
    many = 2 if args.tiny else 4
    # Seconds of load before and after an upgrade under load (cases 7 and 14).
    lead, tail = (0.3, 0.2) if args.tiny else (1.0, 0.5)
    rolling_runs = TINY_RUNS if args.tiny else 1_000_000 if args.scale else 100_000
    return {
        "startup": ("1. CLI start-up", lambda s: bench_startup(s, repeat)),
        "upgrade": (
            "2. Empty database to head",
            lambda s: bench_upgrade(s, repeat, warm_up=not args.tiny),
        ),
        "data": (
            "3. Data migrations at scale",
            lambda s: bench_data_migrations(s, sizes, max(1, repeat // 2)),
        ),
        "concurrency": (
            "4. Concurrent upgrades",
            lambda s: bench_concurrency(s, repeat, *crowd),
        ),
        "dryrun": ("5. Dry-run SQL for the whole history", lambda s: bench_dry_run(s, repeat)),
        "server": (
            "6. REST API throughput",
            lambda s: bench_server(s, 50 if args.tiny else 1000, repeat, many),
        ),
        "online": (
            "7. Upgrading a busy database",
            lambda s: bench_online_upgrade(s, online_sizes, lead, tail),
        ),
        "states": (
            "8. Concurrent state changes",
            lambda s: bench_state_races(s, 10 if args.tiny else 200, many),
        ),
        "fresh": (
            "9. Fresh installs from the snapshot",
            lambda s: bench_fresh_install(
                s, repeat, 3 if args.tiny else EXTRA, warm_up=not args.tiny
            ),
        ),
        "backup": (
            "10. SQLite backup before a change",
            lambda s: bench_backup(s, repeat, 2_000 if args.tiny else 200_000),
        ),
        "ready": (
            "11. Readiness probes",
            lambda s: bench_readiness(s, 10 if args.tiny else 200, repeat),
        ),
        "writes": (
            "12. SQLite write tails",
            lambda s: bench_write_tails(s, (8, 32), 32 if args.tiny else 200, repeat),
        ),
        "rolling": (
            "13. A rolling upgrade under load",
            lambda s: bench_rolling(s, rolling_runs, args.output, args.tiny),
        ),
        "expand": (
            "14. SQLite writes during the expand",
            lambda s: bench_expand_writes(s, 2_000 if args.tiny else 200_000, lead, tail),
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the selected cases and report them."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--scale", action="store_true")
    parser.add_argument("--cases", default=",".join(ALL_CASES))
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("results.md"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.tiny else 5
    chosen = [name.strip() for name in args.cases.split(",") if name.strip()]
    cases = _cases(args)
    unknown = [name for name in chosen if name not in cases]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(cases)}")

    sections = []
    with scratch() as place:
        for name in chosen:
            title, bench = cases[name]
            print(f"running {title} ...", file=sys.stderr, flush=True)
            table = render_table(title, bench(place))
            print(table, flush=True)
            sections.append(table)

    if not args.no_write:
        mode = "tiny" if args.tiny else "scale" if args.scale else "default"
        args.output.write_text(results_document(mode, args.repeat, sections), encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def results_document(mode: str, repeat: int, sections: list[str]) -> str:
    """The Markdown results file: when and where it was measured, then each case's table."""
    header = (
        f"# flowdb benchmark results\n\n"
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, mode `{mode}`, "
        f"{repeat} runs per measurement; ratios are medians measured in the same run.\n\n"
        f"{environment_report(postgres_version())}\n"
    )
    return header + "\n".join(sections)


if __name__ == "__main__":
    sys.exit(main())

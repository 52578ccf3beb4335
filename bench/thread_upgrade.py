"""``python -m bench.thread_upgrade N``: N threads call ``alembic_upgrade()`` at the same moment."""

from __future__ import annotations

import sys
import threading

from flowdb.database.alembic_commands import alembic_upgrade


def main(count: int) -> None:
    """Start ``count`` threads together; fail if any of them failed."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def upgrade() -> None:
        barrier.wait()
        try:
            alembic_upgrade()
        except BaseException as error:  # reported below; a benchmark of failures is void
            errors.append(error)

    threads = [threading.Thread(target=upgrade) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"{len(errors)} of {count} threads failed: {errors[0]!r}")


if __name__ == "__main__":
    main(int(sys.argv[1]))

"""``python -m bench.uncached_server PORT``: the API server as it was before readiness was cached.

The bench's baseline for case 11: the same app, except that every ``/api/ready`` judges
the schema (catalog and columns) again, as the route did before ``ReadinessCache``.
"""

from __future__ import annotations

import sys

from flowdb.server import readiness
from flowdb.server.engine import ServerDatabase


async def _judge_every_time(
    self: readiness.ReadinessCache, server: ServerDatabase
) -> readiness.Verdict:
    from anyio import to_thread

    return await to_thread.run_sync(readiness.judge, server.database)


if __name__ == "__main__":
    import uvicorn

    readiness.ReadinessCache.verdict = _judge_every_time  # type: ignore[method-assign]
    uvicorn.run(
        "flowdb.server.app:create_app",
        factory=True,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
    )

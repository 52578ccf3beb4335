"""``GET /metrics``: Prometheus' text format (``server.metrics``), on unless turned off.

Outside ``/api`` where scrapers look by default. With ``FLOWDB_SERVER_API_AUTH`` set it
needs the same credentials as every route but the probes; ``FLOWDB_SERVER_METRICS=false``
removes it (404).
"""

from __future__ import annotations

from fastapi import Request, Response


async def metrics(request: Request) -> Response:
    """Every metric of this server process, in Prometheus' text exposition format."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from flowdb.server.metrics import Metrics

    collected: Metrics = request.app.state.metrics
    return Response(await collected.exposition(), media_type=CONTENT_TYPE_LATEST)

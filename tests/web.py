"""``get`` and ``post`` for the tests' HTTP calls to real server processes.

``httpx.get`` builds a client per call, and with it an SSL context that loads the
system's CA certificates: about 27 ms of CPU, which a loop polling a starting server
every 50 ms paid on every poll. These share one client, with keep-alive off so that
every call still opens its own connection, as a probe or a new client would.
"""

from __future__ import annotations

from typing import Any

import httpx

_client = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def get(url: str, **options: Any) -> httpx.Response:
    """``httpx.get(url, **options)`` on a connection of its own, without a new client."""
    return _client.get(url, **options)


def post(url: str, **options: Any) -> httpx.Response:
    """``httpx.post(url, **options)`` on a connection of its own, without a new client."""
    return _client.post(url, **options)

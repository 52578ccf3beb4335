"""A replica that waits for the schema while it already listens.

With ``FLOWDB_MIGRATE_ON_START=false`` a migration job upgrades the database while the
replicas start. A replica that waited before listening would fail its liveness probe
and be restarted over and over during a long upgrade; so it listens at once and waits
in a thread (``database.waiting.SchemaWaiter``):

- ``/api/health`` answers 200 from the start;
- ``/api/ready`` answers 503 with what it waits for (``WaitState.as_json``: the
  revision, the migration's phase, rows done and total, the time left, the holder);
- every other ``/api/`` route answers 503 with one line and ``Retry-After``;
- a line is logged every ``LOG_EVERY_SECONDS`` while it waits;
- at head the gate opens: the replica serves without a restart.

When nothing moves for ``FLOWDB_SCHEMA_WAIT_TIMEOUT`` seconds (nobody holds the
migration lock, no progress), the worker prints one ``Error:`` line and exits with the
error's code; under ``--workers N`` it stops its master first, so the replica ends as a
whole instead of having the worker restarted.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from flowdb.errors import FlowdbError, one_line_message

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from flowdb.database.target import Database
    from flowdb.database.waiting import WaitState

log = logging.getLogger("uvicorn.error")
#: What a client is told to wait before it asks again.
RETRY_AFTER_SECONDS = 5
_OPEN_PATHS = frozenset({"/api/health"})


class SchemaWait:
    """The wait of one worker: its last look, and whether the schema reached head."""

    def __init__(self, database: Database) -> None:
        from flowdb.database.waiting import SchemaWaiter

        self.database = database
        self.ready = False
        self.state: WaitState | None = None
        self._last_log = 0.0
        self._waiter = SchemaWaiter(
            database, database.settings.schema_wait_timeout, serve_contracts=True
        )

    def prime(self) -> None:
        """Take the first look now (blocking), so that the first ``/api/ready`` has it."""
        self._report(self._waiter.observe())

    def start(self) -> None:
        """Wait in a daemon thread (the event loop keeps answering meanwhile)."""
        threading.Thread(target=self._run, name="flowdb-schema-wait", daemon=True).start()

    def _run(self) -> None:
        try:
            state = self._waiter.wait(self._report)
        except FlowdbError as error:
            _stop(error)
            return
        except Exception as error:  # a bug must not leave the replica unready forever
            _stop(FlowdbError(f"The wait for the schema failed unexpectedly: {error!r}"))
            return
        self.ready = True
        if state.current == state.head:
            log.info("The schema is at head %s; serving.", state.head)
        else:  # behind by contract revisions only: they wait for the older replicas
            log.info(
                "The schema is at %s; only contract revisions wait before head %s; serving.",
                state.current,
                state.head,
            )

    def _report(self, state: WaitState) -> None:
        self.state = state
        now = time.monotonic()
        if not state.at_head and now - self._last_log >= _log_every():
            self._last_log = now
            log.info("%s%s", state.line()[:1].upper(), state.line()[1:])

    def detail(self) -> str:
        """One line for the 503s: what the replica waits for."""
        if self.state is None:
            return "Not ready: waiting for the schema to reach head (first look under way)."
        line = self.state.line()
        return f"Not ready: {line}."

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer a request while waiting; ``False`` lets it through (health, non-API paths)."""
        path = str(scope.get("path", ""))
        if path in _OPEN_PATHS or not path.startswith("/api/"):
            return False
        body: dict[str, object] = {"detail": self.detail()}
        if path == "/api/ready":
            body["waiting"] = None if self.state is None else self.state.as_json()
        payload = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        method = scope.get("method", "GET")
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else payload})
        return True


def _log_every() -> float:
    from flowdb.database.waiting import LOG_EVERY_SECONDS

    return LOG_EVERY_SECONDS


def _stop(error: FlowdbError) -> None:
    """End the replica with one line: this worker, and its master when it has one."""
    sys.stderr.write(f"Error: {one_line_message(error)}\n")
    sys.stderr.flush()
    master = multiprocessing.parent_process()
    if master is not None and master.pid is not None:
        os.kill(master.pid, signal.SIGTERM)
    os._exit(int(error.exit_code))

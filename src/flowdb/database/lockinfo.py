"""Who holds the migration lock, and what waits for it: small values every layer may use.

A leaf: it imports nothing of flowdb, so the dialects (which find a lock's holder)
and ``locking`` (which waits for it) both build on it. ``Waiter`` here is the
Protocol a dialect waits through; ``locking.Waiter`` is the implementation.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass
from typing import Protocol

#: Seconds between two tries of a lock another process holds.
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class LockHolder:
    """Who holds the migration lock, as far as a waiter can tell.

    A holder that says who it is (PostgreSQL's ``application_name``, SQLite's holder
    file) is known by its ``command``, ``pid`` and ``host``. A holder that a waiter knows
    only as a connection of the database server (MariaDB and MySQL have no
    ``application_name``: the process list shows a connection id, a client address and
    an idle time) has ``connection`` (the server's id of it), ``host`` (the client's
    ``address:port``) and no ``pid``: the server's connection id is not a process id.
    """

    command: str
    pid: int | None
    host: str
    since: str
    connection: int | None = None

    @classmethod
    def server_connection(cls, connection: int, client: str, since: str) -> LockHolder:
        """A holder known only by its server ``connection`` and ``client`` address.

        Nothing says what program it is, so it is not called a flowdb command.
        """
        return cls(command="", pid=None, host=client, since=since, connection=connection)

    def describe(self) -> str:
        """One phrase for messages: "flowdb upgrade (pid 12 on web-1, since 10:02:03 UTC)".

        A holder known only by its server connection, named neutrally: "server
        connection 9583 (client 10.0.0.5:54321, last statement 10:02:03 UTC)".
        """
        if self.pid is None:
            return (
                f"server connection {self.connection} "
                f"(client {self.host}, last statement {self.since})"
            )
        return f"flowdb {self.command} (pid {self.pid} on {self.host}, since {self.since})"


def now_text(moment: dt.datetime | None = None) -> str:
    """A moment (default: now) as UTC text for holder descriptions."""
    return (moment or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def me(command: str) -> LockHolder:
    """This process as a lock holder running ``command``."""
    return LockHolder(command=command, pid=os.getpid(), host=socket.gethostname(), since=now_text())


class Waiter(Protocol):
    """Waits for something another process holds, up to a deadline, naming the holder."""

    #: What is waited for ("the migration lock", "the database"), for messages.
    what: str

    def remaining(self) -> float:
        """Seconds left before the wait gives up (never negative)."""
        ...

    def still_waiting(
        self, holder: LockHolder | None, other: str = "another flowdb command"
    ) -> None:
        """Report the holder (now and then), or raise when the time is up."""
        ...

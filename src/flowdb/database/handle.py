"""What the modules below ``target.Database`` need of it: a Protocol, so they never import it.

``target.Database`` builds on ``locking``, ``status``, ``failures`` and ``rereading``;
they in turn take the database they work on as this ``DatabaseHandle`` (which
``Database`` is), so the imports go one way: dialects, then these, then ``target``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from flowdb.database.dialects.base import Dialect

if TYPE_CHECKING:
    from flowdb.settings import Settings


class DatabaseHandle(Protocol):
    """A database flowdb works on: its dialect, its settings, how messages name it."""

    @property
    def dialect(self) -> Dialect:
        """The dialect that does the database's work."""
        ...

    @property
    def settings(self) -> Settings:
        """The settings it was opened with."""
        ...

    def describe(self) -> str:
        """``the database at LOCATION``, for messages (never with a password)."""
        ...

    def location(self) -> str:
        """Where the database is: a file, or a URL without its password."""
        ...

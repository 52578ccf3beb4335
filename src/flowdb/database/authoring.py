"""Writing a new revision file (``flowdb database revision``), for developers.

The new file must leave the history usable: the message is escaped into the file's
docstring, a ``rev_id`` that exists already is refused, and the written file is
compiled and the whole history loaded before the command reports success. When any
of that fails, the file is removed and the error names it, so a bad revision never
breaks every later command.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowdb.database import history as shipped
from flowdb.database import runner
from flowdb.database.history import forget_history, load_history
from flowdb.errors import (
    BrokenHistoryError,
    DatabaseReadOnlyError,
    InvalidRevisionMessageError,
    UsageError,
)

if TYPE_CHECKING:
    from flowdb.database.target import Database

logger = logging.getLogger("flowdb.migrations")


def create_revision(
    database: Database, message: str | None, autogenerate: bool, **kwargs: Any
) -> Path:
    """Write a revision after the current head and return its path.

    With ``autogenerate`` the models are compared with ``database`` (which must be at
    head) and the differences written as operations, to be reviewed by hand.
    """
    from alembic import command

    if message is not None and (not isinstance(message, str) or not message.strip()):
        raise InvalidRevisionMessageError(
            "The revision message is empty; describe the change, e.g. -m 'add flow_run.priority'."
        )
    versions = shipped.MIGRATIONS_FOLDER / "versions"
    history = load_history(versions)
    rev_id = kwargs.get("rev_id")
    if rev_id is not None and history.knows(str(rev_id)):
        raise UsageError(
            f"Revision {rev_id} exists already ({history.get(str(rev_id)).path.name}); "
            "choose another rev_id or leave it out for a new random one."
        )
    config = runner.alembic_config(database)
    with database.errors():
        try:
            script = command.revision(config, message=message, autogenerate=autogenerate, **kwargs)
        except OSError as exc:
            if not str(exc.filename or "").startswith(str(versions)):
                raise
            raise DatabaseReadOnlyError(
                f"Cannot write the new revision file in {versions} ({exc.strerror}); run "
                "this command from a source checkout of flowdb where that folder is writable."
            ) from None
    path = Path(script.path) if script is not None and not isinstance(script, list) else None
    if path is None:
        raise BrokenHistoryError("Alembic wrote no revision file; nothing was changed.")
    forget_history()
    try:
        load_history(versions)
    except BrokenHistoryError as exc:
        path.unlink(missing_ok=True)
        forget_history()
        raise BrokenHistoryError(f"{exc} The new file was removed; nothing was changed.") from None
    logger.info("Wrote %s", path)
    return path

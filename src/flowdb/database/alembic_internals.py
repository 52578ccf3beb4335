"""The one place flowdb reaches into Alembic's private internals.

Alembic has no public way to do these four things, and flowdb needs each of them; every
reach is a function here, so a change of Alembic breaks one module, and
``tests/database/test_alembic_internals.py`` fails on the installed Alembic when an
attribute relied on is gone or behaves differently:

* ``commit_and_begin``: an online data migration commits its work so far and goes on in
  a new transaction that Alembic takes for the migration's own, so that Alembic's
  version update lands in the last one (``MigrationContext._transaction``; Alembic's
  ``autocommit_block`` swaps it the same way).
* ``guard_implementation``: one migration run gets a subclass of its DDL implementation
  with flowdb's guarded operations (rerunnable DDL where DDL commits by itself). The
  instance's class is swapped (``MigrationContext.impl``); the subclass declares no
  ``__dialect__``, so Alembic's registry of implementations by dialect (filled by its
  metaclass, ``alembic.ddl.impl._impls``) never sees it and every other migration run
  in the process keeps Alembic's own class.
* ``environment_options``: the options Alembic's command gave ``env.py`` (its function,
  the raw target) as written, before Alembic resolves them (``EnvironmentContext
  .context_opts`` behind the ``alembic.context`` proxy's ``_proxy``).
* ``cli_function``: the command function Alembic's CLI parsed (``Config.cmd_opts.cmd``,
  set by ``CommandLine``'s sub-parsers).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.ddl.impl import DefaultImpl
    from alembic.runtime.migration import MigrationContext

#: The guarded subclasses made so far, by base class and methods (made once each).
_GUARDED: dict[tuple[type[DefaultImpl], tuple[tuple[str, Any], ...]], type[DefaultImpl]] = {}


def commit_and_begin(context: MigrationContext, pause: float = 0.0) -> None:
    """Commit the migration's transaction and begin the next one as the migration's own.

    Online only, inside ``begin_transaction`` (a transaction per migration). ``pause``
    seconds pass between the two, holding no lock, so that waiting writers get a turn.
    """
    transaction = context._transaction
    assert transaction is not None, "called inside the migration's transaction"
    transaction.commit()
    if pause > 0:
        time.sleep(pause)
    connection = context.connection
    assert connection is not None
    context._transaction = connection.begin()


def guard_implementation(context: MigrationContext, methods: dict[str, Any]) -> type[DefaultImpl]:
    """Give ``context`` (only) an implementation whose ``methods`` replace Alembic's.

    Each method may call Alembic's own through ``super(type(self), self)``. Returns the
    class now in use; a context guarded already keeps its class. One class is made per
    Alembic class and set of methods (two callers with other methods get two classes).
    """
    impl = context.impl
    base = type(impl)
    if base in _GUARDED.values():
        return base
    key = (base, tuple(sorted(methods.items(), key=lambda item: item[0])))
    guarded = _GUARDED.get(key)
    if guarded is None:
        # No "__dialect__" in the namespace: Alembic's metaclass registers only classes
        # that declare one, so the registry keeps pointing at ``base``.
        guarded = type(f"Guarded{base.__name__}", (base,), dict(methods))
        _GUARDED[key] = guarded
    impl.__class__ = guarded
    return guarded


def environment_options(context: Any) -> dict[str, Any]:
    """The options the running Alembic command gave ``env.py`` (``{}`` when there are none).

    ``context`` is the ``alembic.context`` module; read as given (``"-1"``, ``"base"``,
    a prefix): the public ``get_revision_argument`` resolves them with Alembic's rules
    first, and fails on names flowdb would explain better.
    """
    options = getattr(getattr(context, "_proxy", None), "context_opts", None)
    return options if isinstance(options, dict) else {}


def cli_function(config: Config) -> Any:
    """The command function Alembic's own CLI is running, or ``None`` when not run by it."""
    command = getattr(getattr(config, "cmd_opts", None), "cmd", None)
    return command[0] if command else None

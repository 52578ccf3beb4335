"""What a server that does not migrate accepts without waiting (``waiting.serves_this_code``).

Behind head by contract revisions only, the database serves this code: the contracts
wait for the older replicas to go, and those leave only once the new ones are ready.
``flowdb database wait`` still waits for head itself. The rule reads the history
only, the same on every dialect: SQLite here (the rehearsal in ``tests/deploy`` runs
it on PostgreSQL with real replicas).
"""

from __future__ import annotations

import pytest

from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.database.history import load_history
from flowdb.database.target import Database
from flowdb.database.waiting import SchemaWaiter, first_look
from flowdb.errors import SchemaNotAtHeadError
from tests.dbtools import lock_holder


@pytest.fixture
def configured(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite file, set as FLOWDB_DATABASE_URL."""
    monkeypatch.setenv("FLOWDB_DATABASE_URL", sqlite_url)
    return sqlite_url


def test_behind_by_a_contract_only_a_server_serves_and_the_wait_command_still_waits(
    configured: str,
) -> None:
    history = load_history()
    contract, expand = history.revisions[-1], history.revisions[-2]
    assert (contract.phase, expand.phase) == ("contract", "expand")
    alembic_upgrade(expand.id)
    database = Database.from_url(configured)

    with lock_holder(configured):  # a migration (the contract itself) runs: wait for it
        assert first_look(database) is False
    assert first_look(database) is True
    served = SchemaWaiter(database, 0, serve_contracts=True).wait()
    assert served.at_head and served.current == expand.id and served.head == contract.id
    with pytest.raises(SchemaNotAtHeadError):
        SchemaWaiter(database, 0).wait()


def test_behind_by_an_expand_a_server_waits(configured: str) -> None:
    alembic_upgrade(load_history().revisions[-3].id)
    database = Database.from_url(configured)

    assert first_look(database) is False
    with pytest.raises(SchemaNotAtHeadError):
        SchemaWaiter(database, 0, serve_contracts=True).wait()

"""Settings converted without pydantic: types, bounds, secrets, and what is imported."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from flowdb.errors import ConfigurationError
from flowdb.settings import LONGEST_TIMEOUT, Secret, Settings, get_settings

#: Every setting that is a number of seconds or days (a float).
FLOAT_SETTINGS = [f.name for f in dataclasses.fields(Settings) if f.type in (float, "float")]
#: The timeouts that reach PostgreSQL or SQLite as milliseconds.
TIMEOUTS = [
    "migration_lock_timeout",
    "migration_statement_timeout",
    "migration_ddl_lock_timeout",
    "server_query_timeout",
    "schema_wait_timeout",
    "server_heartbeat_stale",
]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("FLOWDB_MIGRATION_LOCK_RETRIES", "7", ("migration_lock_retries", 7)),
        ("FLOWDB_MIGRATION_LOCK_TIMEOUT", "2.5", ("migration_lock_timeout", 2.5)),
        ("FLOWDB_SERVER_ADMIN_ROUTES", "YES", ("server_admin_routes", True)),
        ("FLOWDB_MIGRATE_ON_START", "off", ("migrate_on_start", False)),
        ("FLOWDB_DATABASE_POOL_MODE", "transaction", ("database_pool_mode", "transaction")),
        ("FLOWDB_BACKUP_DIR", "/tmp/backups", ("backup_dir", Path("/tmp/backups"))),
        ("FLOWDB_HOME", "  ", ("home", Path("~/.flowdb"))),
    ],
)
def test_text_becomes_the_fields_type(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: tuple[str, object]
) -> None:
    monkeypatch.setenv(name, value)
    field, typed = expected
    got = getattr(get_settings(), field)
    assert got == typed and type(got) is type(typed)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("FLOWDB_DATABASE_POOL_MODE", "sometimes", ("'auto', 'session' or 'transaction'",)),
        ("FLOWDB_MIGRATION_DDL_LOCK_TIMEOUT", "0", ("greater than 0",)),
        ("FLOWDB_MIGRATION_LOCK_RETRIES", "101", ("less than or equal to 100",)),
        ("FLOWDB_MIGRATION_LOCK_RETRIES", "many", ("valid integer",)),
    ],
)
def test_a_value_out_of_its_bounds_is_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: tuple[str, ...]
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        get_settings()
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r} is invalid (")
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("value", ["inf", "-Infinity", "nan", "1e309"])
@pytest.mark.parametrize("field", FLOAT_SETTINGS)
def test_a_number_setting_is_finite(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    """Infinity passed every lower bound, then a driver failed on it: a traceback on
    PostgreSQL, "the fresh install failed ... regenerate the snapshot" on SQLite."""
    name = f"FLOWDB_{field.upper()}"
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        get_settings()
    assert str(caught.value) == (
        f"{name}={value!r} is invalid (Input should be a finite number); "
        "fix or unset that environment variable."
    )
    with pytest.raises(ConfigurationError, match="finite number"):
        Settings(**{field: float(value)})


@pytest.mark.parametrize("field", TIMEOUTS)
def test_a_timeout_is_at_most_what_the_servers_take(
    monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    """A longer one failed at connect time as if the server were unreachable."""
    assert field in FLOAT_SETTINGS
    assert getattr(Settings(**{field: LONGEST_TIMEOUT}), field) == LONGEST_TIMEOUT
    monkeypatch.setenv(f"FLOWDB_{field.upper()}", str(LONGEST_TIMEOUT + 1))
    with pytest.raises(ConfigurationError, match=f"less than or equal to {LONGEST_TIMEOUT}"):
        get_settings()


def test_a_malformed_credential_is_refused_without_quoting_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOWDB_SERVER_API_AUTH", "basic:only-a-user-s3cret")
    with pytest.raises(ConfigurationError) as caught:
        get_settings()
    message = str(caught.value)
    assert message.startswith("FLOWDB_SERVER_API_AUTH is invalid (")
    assert "s3cret" not in message


def test_a_credential_is_kept_secret_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWDB_SERVER_API_AUTH", "bearer:t0ken-value")
    settings = get_settings()
    assert isinstance(settings.server_api_auth, Secret)
    assert "t0ken-value" not in repr(settings)
    credentials = settings.api_credentials()
    assert credentials is not None and credentials.secret == "t0ken-value"


def test_replace_keeps_the_other_values_and_checks_the_new_one() -> None:
    settings = Settings(database_url="sqlite:///x.db", migration_lock_timeout=3)
    changed = dataclasses.replace(settings, migration_lock_timeout=1)
    assert changed.migration_lock_timeout == 1.0
    assert changed.database_url == "sqlite:///x.db"
    with pytest.raises(ConfigurationError):
        dataclasses.replace(settings, migration_lock_timeout=-1)


def test_an_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="no_such_setting"):
        Settings(no_such_setting=1)


def test_reading_the_settings_imports_no_pydantic() -> None:
    probe = "import sys, flowdb.settings as s; s.get_settings(); print('pydantic' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"

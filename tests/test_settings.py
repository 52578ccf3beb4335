"""Settings: defaults, the FLOWDB_ prefix, the default database in home, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowdb.errors import ConfigurationError
from flowdb.settings import DEFAULT_DATABASE_FILENAME, Settings, get_settings
from tests.dbtools import sqlite_path


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWDB_HOME")
    settings = get_settings()

    assert settings.home == Path("~/.flowdb")
    assert settings.resolved_home == (Path.home() / ".flowdb").resolve()
    assert settings.database_url is None
    assert settings.migration_lock_timeout == 600
    assert settings.migrate_on_start is True
    assert settings.server_admin_routes is False
    default = settings.resolved_database_url()
    assert default == f"sqlite:///{(Path.home() / '.flowdb').resolve() / 'flowdb.db'}"
    assert DEFAULT_DATABASE_FILENAME == "flowdb.db"


def test_every_setting_is_read_from_its_prefixed_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLOWDB_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("FLOWDB_DATABASE_URL", "postgresql+psycopg://u@db:5432/flows")
    monkeypatch.setenv("FLOWDB_MIGRATION_LOCK_TIMEOUT", "2.5")
    monkeypatch.setenv("FLOWDB_MIGRATE_ON_START", "false")
    monkeypatch.setenv("FLOWDB_SERVER_ADMIN_ROUTES", "1")

    settings = get_settings()

    assert settings.resolved_home == tmp_path / "elsewhere"
    assert settings.resolved_database_url() == "postgresql+psycopg://u@db:5432/flows"
    assert settings.migration_lock_timeout == 2.5
    assert settings.migrate_on_start is False
    assert settings.server_admin_routes is True


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/other")
    monkeypatch.setenv("MIGRATION_LOCK_TIMEOUT", "abc")
    monkeypatch.setenv("MIGRATE_ON_START", "false")

    settings = get_settings()

    assert settings.database_url is None
    assert settings.migration_lock_timeout == 600
    assert settings.migrate_on_start is True


def test_unknown_flowdb_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWDB_NO_SUCH_SETTING", "x")
    assert get_settings().migration_lock_timeout == 600


def test_settings_are_read_anew_on_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWDB_MIGRATION_LOCK_TIMEOUT", "1")
    assert get_settings().migration_lock_timeout == 1
    monkeypatch.setenv("FLOWDB_MIGRATION_LOCK_TIMEOUT", "7")
    assert get_settings().migration_lock_timeout == 7


def test_default_database_is_flowdb_db_in_home(tmp_path: Path) -> None:
    # conftest points FLOWDB_HOME at tmp_path / "flowdb-home"
    settings = get_settings()
    path = sqlite_path(settings.resolved_database_url())

    assert path == tmp_path / "flowdb-home" / "flowdb.db"
    assert not (tmp_path / "flowdb-home").exists()  # reading settings creates nothing


def test_home_with_tilde_is_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWDB_HOME", "~/flowdb-data")
    assert get_settings().resolved_home == (Path.home() / "flowdb-data").resolve()


def test_relative_home_is_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The folder of the default database is compared with the home folder to decide
    # whether it may be created; both must be absolute for that comparison to hold.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOWDB_HOME", "data")
    settings = get_settings()

    assert settings.resolved_home == tmp_path / "data"
    path = sqlite_path(settings.resolved_database_url())
    assert path is not None
    assert path.parent == settings.resolved_home


@pytest.mark.parametrize("name", ["a?b", "a#b", "100%", "%41", "with space", "ünïcode"])
def test_home_names_with_url_syntax_round_trip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    monkeypatch.setenv("FLOWDB_HOME", str(tmp_path / name))
    path = sqlite_path(get_settings().resolved_database_url())

    assert path == tmp_path / name / "flowdb.db"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("FLOWDB_MIGRATION_LOCK_TIMEOUT", "abc", ("'abc'", "valid number")),
        ("FLOWDB_MIGRATION_LOCK_TIMEOUT", "-3", ("'-3'", "greater than or equal to 0")),
        ("FLOWDB_MIGRATE_ON_START", "sometimes", ("'sometimes'", "boolean")),
        ("FLOWDB_SERVER_ADMIN_ROUTES", "perhaps", ("'perhaps'", "boolean")),
        ("FLOWDB_SERVER_MAX_BODY_BYTES", "100", ("'100'", "greater than or equal to 1024")),
    ],
)
def test_malformed_variable_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: tuple[str, ...]
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        get_settings()

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{name}=")
    assert "fix or unset that environment variable" in message
    for word in words:
        assert word in message
    assert caught.value.exit_code == 2


def test_settings_class_matches_get_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWDB_MIGRATION_LOCK_TIMEOUT", "3")
    assert Settings().migration_lock_timeout == get_settings().migration_lock_timeout == 3


def test_a_setting_is_given_by_the_environment_or_a_keyword_not_by_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQLite's own batch size applies only where the user said nothing (``is_given``)."""
    import dataclasses

    monkeypatch.delenv("FLOWDB_MIGRATION_BATCH_SIZE", raising=False)
    assert not Settings().is_given("migration_batch_size")
    assert Settings(migration_batch_size=7).is_given("migration_batch_size")
    replaced = dataclasses.replace(Settings(), migration_lock_timeout=3)
    assert replaced.is_given("migration_lock_timeout")
    assert not replaced.is_given("migration_batch_size")
    monkeypatch.setenv("FLOWDB_MIGRATION_BATCH_SIZE", "500")
    assert dataclasses.replace(Settings()).is_given("migration_batch_size")

"""Settings read from the environment (prefix ``FLOWDB_``).

Settings are read anew by ``get_settings()`` on each call so that tests and
long-lived processes see changes to the environment; reading them is cheap.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_FILENAME = "flowdb.db"


class Settings(BaseSettings):
    """flowdb's configuration; every field maps to an ``FLOWDB_<NAME>`` variable."""

    model_config = SettingsConfigDict(env_prefix="FLOWDB_", extra="ignore")

    home: Path = Field(
        default=Path("~/.flowdb"),
        description="Folder for flowdb's own files, including the default SQLite database.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the database; default: a SQLite file flowdb.db in home.",
    )
    migration_lock_timeout: float = Field(
        default=600.0,
        ge=0,
        description="Seconds a migration command waits for another one to finish.",
    )
    migrate_on_start: bool = Field(
        default=True,
        description="Whether the API server upgrades the database to head when it starts.",
    )
    server_admin_routes: bool = Field(
        default=False,
        description="Whether the destructive /api/admin/database routes are enabled.",
    )

    @property
    def resolved_home(self) -> Path:
        """The home folder with ``~`` expanded."""
        return self.home.expanduser()

    def resolved_database_url(self) -> str:
        """The configured URL, or the default SQLite file in the home folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_home / DEFAULT_DATABASE_FILENAME}"


def get_settings() -> Settings:
    """Read the settings from the environment now.

    A malformed variable becomes a ``ConfigurationError`` naming the variable,
    instead of pydantic's multi-line report.
    """
    from pydantic import ValidationError

    from flowdb.errors import ConfigurationError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "FLOWDB_" + "_".join(str(part) for part in first["loc"]).upper()
        raise ConfigurationError(
            f"{name} is invalid ({first['msg']}); fix or unset that environment variable."
        ) from None

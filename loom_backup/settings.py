"""Settings of the backup command: environment variables with defaults, overridden by its
command-line options (see docs/backup.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from loom_backup.errors import BackupError
from servicekit.auth import SERVICE_TOKEN_FILE


class BackupSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BACKUP_", extra="ignore", populate_by_name=True)

    # Where the running stack keeps its data (for the service token file), or where a restore
    # writes.
    data_dir: Path = Field(default=Path("data"), validation_alias=AliasChoices("DATA_DIR"))
    content_address: str = "127.0.0.1:50051"
    vector_address: str = "127.0.0.1:50052"
    # Empty means: read DATA_DIR/service.token (never created by this command).
    service_token: str = Field(default="", validation_alias="LOOM_SERVICE_TOKEN", repr=False)
    # The database a PostgreSQL backup is restored into (empty for SQLite).
    database_url: str = Field(default="", validation_alias="CONTENT_DATABASE_URL")
    # Deadline of a whole backup RPC, and how long a restore waits for the index to level.
    timeout_seconds: float = Field(default=6 * 3600.0, gt=0)
    level_timeout_seconds: float = Field(default=900.0, gt=0)
    # How long to wait for a service to answer before saying it is not reachable.
    connect_timeout_seconds: float = Field(default=10.0, gt=0)

    def token(self) -> str:
        if self.service_token:
            return self.service_token
        path = self.data_dir / SERVICE_TOKEN_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise BackupError(
                f"no service token: set LOOM_SERVICE_TOKEN, or DATA_DIR to the running stack's "
                f"data folder (no {path})"
            ) from None

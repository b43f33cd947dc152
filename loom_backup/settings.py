"""Settings of the backup command: environment variables with defaults, overridden by its
command-line options (see docs/backup.md)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from loom_backup.errors import BackupError
from servicekit.settings import SERVICE_TOKEN_FILE, LoomSettings


class BackupSettings(LoomSettings):
    """DATA_DIR (where the running stack keeps its data, for the service token file, or where
    a restore writes) and LOOM_SERVICE_TOKEN come from servicekit.settings."""

    model_config = SettingsConfigDict(env_prefix="BACKUP_", extra="ignore", populate_by_name=True)

    content_address: str = "127.0.0.1:50051"
    vector_address: str = "127.0.0.1:50052"
    # The database a PostgreSQL backup is restored into (empty for SQLite). Not in the repr:
    # a URL may hold a password.
    database_url: str = Field(default="", validation_alias="CONTENT_DATABASE_URL", repr=False)
    # Deadline of a whole backup RPC, and how long a restore waits for the index to level.
    timeout_seconds: float = Field(default=6 * 3600.0, gt=0)
    level_timeout_seconds: float = Field(default=900.0, gt=0)
    # How long to wait for a service to answer before saying it is not reachable.
    connect_timeout_seconds: float = Field(default=10.0, gt=0)

    def token(self) -> str:
        """LOOM_SERVICE_TOKEN, or DATA_DIR/service.token, which this command only reads: a
        token it created would match no running service."""
        if configured := self.service_token.get_secret_value():
            return configured
        path = self.data_dir / SERVICE_TOKEN_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise BackupError(
                f"no service token: set LOOM_SERVICE_TOKEN, or DATA_DIR to the running stack's "
                f"data folder (no {path})"
            ) from None

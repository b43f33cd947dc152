"""What every process's settings share: the base of content_service's, vector_service's,
image_worker's and loom_backup's one pydantic-settings object each.

Each process's class adds its own fields under its own prefix (CONTENT_, VECTOR_, WORKER_,
BACKUP_); the shared ones keep their unprefixed names. Secrets are never in a repr (or a log
line made from one): the service token is a `SecretStr`, whose value is read only where it is
sent or compared."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from servicekit.auth import load_or_create_secret
from servicekit.logs import LogFormat
from servicekit.tracing import Mode as TraceMode

__all__ = ["SERVICE_TOKEN_FILE", "LoomSettings", "ServiceSettings"]

SERVICE_TOKEN_FILE = "service.token"  # noqa: S105 - a file name, not a secret


class LoomSettings(BaseSettings):
    """Shared by every process, the backup command included."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    data_dir: Path = Field(default=Path("data"), validation_alias=AliasChoices("DATA_DIR"))
    # Shared by our own processes; empty means: read or create DATA_DIR/service.token (0600).
    service_token: SecretStr = Field(default=SecretStr(""), validation_alias="LOOM_SERVICE_TOKEN")

    def token(self) -> str:
        """The token our own processes share: LOOM_SERVICE_TOKEN when set, else the one in
        DATA_DIR/service.token, created (0600) by whichever process starts first."""
        configured = self.service_token.get_secret_value()
        if configured:
            return configured
        return load_or_create_secret(self.data_dir / SERVICE_TOKEN_FILE, "loomsvc")[0]


class ServiceSettings(LoomSettings):
    """Shared by the long-running processes (the services and the worker), which log at
    LOG_LEVEL in LOG_FORMAT and may trace (LOOM_TRACES); the backup command sets its own
    level from -v.

    The metrics fields take each process's prefix (CONTENT_METRICS_PORT, VECTOR_METRICS_PORT,
    WORKER_METRICS_PORT, and *_METRICS_HOST): each process serves its own scrape endpoint."""

    log_level: str = Field(default="INFO", validation_alias=AliasChoices("LOG_LEVEL"))
    # Where backup RPCs may create folders (os.pathsep-separated); empty: the folder that
    # holds DATA_DIR (so `make backup` writes ./backups beside ./data).
    backup_roots: str = Field(default="", validation_alias="LOOM_BACKUP_ROOTS")

    def backup_root_paths(self) -> list[Path]:
        if self.backup_roots.strip():
            return [Path(p) for p in self.backup_roots.split(os.pathsep) if p.strip()]
        return [self.data_dir.resolve().parent]

    log_format: LogFormat = Field(default="text", validation_alias=AliasChoices("LOG_FORMAT"))
    # off: no tracing code runs at all; otlp: the standard OTEL_EXPORTER_OTLP_* variables
    # say where spans go; console: printed to stderr.
    traces: TraceMode = Field(default="off", validation_alias=AliasChoices("LOOM_TRACES"))
    # Prometheus scrape endpoint: empty (the default) serves none; 0 a free port, which the
    # log names; else that port.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none"):
            return None
        return value

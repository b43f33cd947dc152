"""content_service settings: one object, read from the environment (see README)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class ContentSettings(ServiceSettings):
    """DATA_DIR, LOOM_SERVICE_TOKEN and LOG_LEVEL come from servicekit.settings."""

    model_config = SettingsConfigDict(env_prefix="CONTENT_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = 50051
    # Empty means a SQLite file under DATA_DIR. Not in the repr: a URL may hold a password.
    database_url_override: str = Field(
        default="", validation_alias="CONTENT_DATABASE_URL", repr=False
    )
    # Empty means: read or create DATA_DIR/admin.key (0600).
    admin_key: str = Field(default="", repr=False)
    workers: int = Field(default=16, ge=1, le=256)
    grace_seconds: float = Field(default=10.0, ge=0)
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)
    db_pool_size: int = Field(default=8, ge=1)
    # How long a team key's lookup is reused in this process (0: every call reads it). A key
    # revoked through another replica works here this long at most (content_service/authn.py).
    auth_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    # Images (docs/images.md). Empty media dir means DATA_DIR/media.
    media_dir_override: str = Field(default="", validation_alias="CONTENT_MEDIA_DIR")
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    # Media over HTTP (content_service/images/http.py): read-only, on a port of its own
    # (0 picks a free one; the log and Running.listeners["media_http"] say which).
    media_http_host: str = "127.0.0.1"
    media_http_port: int = Field(default=50053, ge=0, le=65535)
    # The base of the media URLs handed out (a CDN in front, say); empty means this server's
    # own address, http://<media_http_host>:<bound port> (a wildcard host as loopback).
    media_public_url: str = ""
    # How long an image job's lease lasts (and how far ExtendImageLease moves it).
    lease_seconds: int = Field(default=60, ge=1, le=3600)
    # Claims of one image before a retryable failure or an expired lease fails it for good.
    max_attempts: int = Field(default=5, ge=1, le=100)
    # Index outbox delivery (docs/indexing.md). Empty address: changes are recorded but not
    # delivered until a content_service with an address runs.
    vector_address: str = "127.0.0.1:50052"
    vector_timeout_seconds: float = Field(default=60.0, gt=0)
    outbox_batch_size: int = Field(default=200, ge=1, le=1000)
    outbox_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    outbox_backoff_cap_seconds: float = Field(default=300.0, ge=1)

    @field_validator("media_public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL, e.g. https://cdn.example.com")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or a fragment")
        return value

    @property
    def database_url(self) -> str:
        if self.database_url_override:
            return self.database_url_override
        return f"sqlite:///{(self.data_dir / 'content.db').resolve()}"

    @property
    def media_dir(self) -> Path:
        return Path(self.media_dir_override) if self.media_dir_override else self.data_dir / "media"

"""vector_service settings: one object, read from the environment (see docs/vector.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings
from vector_service.embeddings import EmbedderConfig

Provider = Literal["local", "openai", "hash"]


class VectorSettings(ServiceSettings):
    """DATA_DIR, LOOM_SERVICE_TOKEN and LOG_LEVEL come from servicekit.settings."""

    model_config = SettingsConfigDict(env_prefix="VECTOR_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = 50052
    # Empty means a directory under DATA_DIR. Any URI LanceDB takes (s3://..., gs://...).
    lancedb_uri: str = ""
    # An S3-compatible store for an s3:// URI (docs/vector.md). Empty values fall back to
    # LanceDB's own defaults (the standard AWS_* variables, instance credentials).
    s3_endpoint: str = ""
    s3_region: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    # Plain http:// endpoints (local servers such as MinIO or moto); off, LanceDB refuses them.
    s3_allow_http: bool = False
    # Empty means "openai" when an OpenAI key is configured, else "local".
    embedder: Provider | None = None
    # Empty means the provider's default model.
    embedding_model: str = ""
    # 0 means the model's native size.
    embedding_dimensions: int = Field(default=0, ge=0)
    openai_api_key: str = Field(
        default="",
        validation_alias=AliasChoices("VECTOR_OPENAI_API_KEY", "OPENAI_API_KEY"),
        repr=False,
    )
    openai_base_url: str = ""
    # A collection gets its ANN (IVF) vector index once it holds this many rows; below it,
    # searches scan the scope's rows exactly.
    index_threshold_rows: int = Field(default=50_000, ge=1)
    # IVF partitions = ceil(rows / this): each probe scans about this many rows.
    index_partition_rows: int = Field(default=4096, ge=16)
    # Partitions probed per ANN search (at least; more when a narrow scope needs them).
    search_nprobes: int = Field(default=40, ge=1)
    # The ANN search re-ranks limit * this many candidates with the full vectors.
    search_refine_factor: int = Field(default=5, ge=1)
    # The search tier (docs/vector.md): each team's rows of a collection in memory, within
    # tier_max_bytes in all (least recently searched teams are evicted; 0 turns the tier off),
    # searched exactly up to tier_exact_max_rows rows.
    tier_max_bytes: int = Field(default=1 << 30, ge=0)
    tier_exact_max_rows: int = Field(default=50_000, ge=0)
    # A larger team is held as an in-memory IVF of partitions of about this many rows.
    tier_partition_rows: int = Field(default=1024, ge=16)
    # Query vectors of this many recent query texts are kept (0: every search embeds).
    query_cache_entries: int = Field(default=1024, ge=0)
    # Background maintenance (compaction, index refresh) runs when a collection has this many
    # unmaintained writes, or has any and this many seconds passed.
    maintenance_writes: int = Field(default=100, ge=1)
    maintenance_seconds: float = Field(default=30.0, gt=0)
    workers: int = Field(default=16, ge=1, le=256)
    grace_seconds: float = Field(default=10.0, ge=0)
    # content_service, which resolves tenant API keys (ResolveApiKey).
    content_address: str = "127.0.0.1:50051"
    # Deadline of each ResolveApiKey call, and how long answers are cached.
    content_timeout_seconds: float = Field(default=2.0, gt=0)
    auth_cache_seconds: float = Field(default=30.0, ge=0)
    auth_negative_cache_seconds: float = Field(default=5.0, ge=0)

    @property
    def database_uri(self) -> str:
        if self.lancedb_uri:
            return self.lancedb_uri
        return str((self.data_dir / "lancedb").resolve())

    def storage_options(self) -> dict[str, str]:
        """LanceDB's storage_options for the object store: only what is set, so an unset
        value keeps LanceDB's default rather than overriding it with an empty string."""
        options = {
            "aws_endpoint": self.s3_endpoint,
            "aws_region": self.s3_region,
            "aws_access_key_id": self.s3_access_key_id,
            "aws_secret_access_key": self.s3_secret_access_key.get_secret_value(),
            "allow_http": "true" if self.s3_allow_http else "",
        }
        return {key: value for key, value in options.items() if value}

    @property
    def provider(self) -> Provider:
        if self.embedder is not None:
            return self.embedder
        return "openai" if self.openai_api_key else "local"

    def embedder_config(self) -> EmbedderConfig:
        return EmbedderConfig(
            provider=self.provider,
            model=self.embedding_model,
            dimensions=self.embedding_dimensions,
            base_url=self.openai_base_url,
            api_key=self.openai_api_key,
        )

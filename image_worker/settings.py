"""image_worker settings: one object, read from the environment (see docs/worker.md)."""

from __future__ import annotations

import os
import socket
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from servicekit.settings import ServiceSettings

Mode = Literal["threads", "processes"]

OUTPUT_FORMATS = ("webp", "avif")
# content_service refuses variants wider or taller than this.
MAX_VARIANT_WIDTH = 16384
# content_service answers a claim after at most 30 s of waiting.
MAX_CLAIM_WAIT_SECONDS = 30.0


def available_cores() -> int:
    # The cores this process may run on (a container's cpuset), not the machine's.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _split(value: object) -> object:
    # "320,640" from the environment; JSON-style lists and tuples from code pass through.
    if isinstance(value, str):
        text = value.strip().removeprefix("[").removesuffix("]")
        return tuple(part.strip().strip("\"'") for part in text.split(",") if part.strip())
    return value


class WorkerSettings(ServiceSettings):
    """DATA_DIR, LOOM_SERVICE_TOKEN and LOG_LEVEL come from servicekit.settings."""

    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore", populate_by_name=True)

    content_address: str = "127.0.0.1:50051"
    vector_address: str = "127.0.0.1:50052"
    # Shown in content_service's logs for each claim; empty means host:pid.
    name: str = ""

    # Jobs processed at once by this process.
    concurrency: int = Field(default_factory=available_cores, ge=1, le=64)
    # threads: each job's pixel work runs in its job thread (Pillow releases the GIL);
    # processes: it runs in a pool of `concurrency` processes. docs/worker.md has the numbers.
    mode: Mode = "threads"
    widths: Annotated[tuple[int, ...], NoDecode] = (320, 640, 1024, 1920)
    formats: Annotated[tuple[str, ...], NoDecode] = OUTPUT_FORMATS
    # Pillow's own decompression-bomb guard still fires at about 89 MP, whatever this says.
    max_pixels: int = Field(default=50_000_000, ge=1)
    max_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    # Checked between processing steps; one slow step is not interrupted.
    time_budget_seconds: float = Field(default=30.0, gt=0)

    # How long one ClaimImageJob waits on the server for a job (its deadline is 5 s more).
    claim_wait_seconds: float = Field(default=20.0, gt=0, le=MAX_CLAIM_WAIT_SECONDS)
    # Deadline of each unary call (extend, complete, fail, get).
    call_timeout_seconds: float = Field(default=10.0, gt=0)
    # Deadline of each download of an original and each variant upload.
    transfer_timeout_seconds: float = Field(default=120.0, gt=0)
    # Deadline of each UpsertDocuments call (the embedding model runs inside it).
    vector_timeout_seconds: float = Field(default=30.0, gt=0)
    # How long a job keeps retrying its index write (holding its lease) before it gives the
    # job back to the queue as a retryable failure.
    index_retry_seconds: float = Field(default=120.0, ge=0)
    # Backoff between those retries: doubles from the first value up to the second, jittered.
    retry_backoff_seconds: float = Field(default=0.5, gt=0)
    retry_backoff_max_seconds: float = Field(default=10.0, gt=0)

    # An OpenAI-compatible chat-completions endpoint with vision, e.g.
    # https://api.openai.com/v1 or http://127.0.0.1:11434/v1 (Ollama). Empty: no vision.
    vision_base_url: str = ""
    vision_api_key: str = Field(default="", repr=False)
    # Empty means gpt-4o-mini.
    vision_model: str = ""
    vision_timeout_seconds: float = Field(default=30.0, gt=0)
    vision_max_retries: int = Field(default=2, ge=0, le=10)

    # On SIGTERM: how long in-flight jobs may run on before they are given back to the queue.
    grace_seconds: float = Field(default=10.0, ge=0)

    @field_validator("widths", mode="before")
    @classmethod
    def _widths_from_text(cls, value: object) -> object:
        return _split(value)

    @field_validator("formats", mode="before")
    @classmethod
    def _formats_from_text(cls, value: object) -> object:
        parts = _split(value)
        if isinstance(parts, tuple | list):
            return tuple(str(p).lower() for p in parts)
        return parts

    @field_validator("widths")
    @classmethod
    def _check_widths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("at least one width is needed")
        if any(not 1 <= w <= MAX_VARIANT_WIDTH for w in value):
            raise ValueError(f"widths must be 1-{MAX_VARIANT_WIDTH}")
        return tuple(sorted(set(value)))

    @field_validator("formats")
    @classmethod
    def _check_formats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one format is needed")
        unknown = [f for f in value if f not in OUTPUT_FORMATS]
        if unknown:
            raise ValueError(f"unknown formats {unknown}; choose from {list(OUTPUT_FORMATS)}")
        return tuple(dict.fromkeys(value))

    @property
    def worker_name(self) -> str:
        return self.name or f"{socket.gethostname()}:{os.getpid()}"

    @property
    def vision_enabled(self) -> bool:
        return bool(self.vision_base_url)

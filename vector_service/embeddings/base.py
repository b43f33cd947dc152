"""The embedding provider interface, its errors, and the registry that builds providers.

Providers live in their own modules and are imported only when asked for, so a service that
embeds locally never imports `openai`, and one that calls an API never loads 90 MB of weights.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Embedder",
    "EmbedderConfig",
    "EmbedderFactory",
    "EmbeddingError",
    "EmbeddingUnavailable",
    "available_providers",
    "create_embedder",
    "register_provider",
    "validate_texts",
    "validate_vectors",
]


class EmbeddingError(Exception):
    """Embedding failed for a reason that retrying will not fix.

    Messages never contain the texts being embedded: they end up in logs.
    """


class EmbeddingUnavailable(EmbeddingError):
    """The provider (or what it depends on) is down or overloaded, even after retries.

    Callers map this to gRPC UNAVAILABLE so that their own clients retry later.
    """


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors. Implementations are safe to call from several threads."""

    @property
    def name(self) -> str:
        """Provider name: "local", "openai" or "hash"."""
        ...

    @property
    def model(self) -> str:
        """Model id, recorded per table so that vectors of different models are never mixed."""
        ...

    @property
    def dimensions(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Returns float32 vectors of shape (len(texts), dimensions), row i for texts[i].

        Raises EmbeddingError (or EmbeddingUnavailable) rather than returning a partial,
        None or non-finite result.
        """
        ...


@dataclass
class EmbedderConfig:
    provider: str = "local"
    model: str = ""
    """Empty means the provider's default model."""
    dimensions: int = 0
    """0 means the model's native size; providers that cannot honour another size refuse it."""
    base_url: str = ""
    # Kept out of repr so that logging a config cannot leak the key.
    api_key: str = field(default="", repr=False)
    timeout_s: float = 30
    max_retries: int = 5
    batch_size: int = 64


EmbedderFactory = Callable[[EmbedderConfig], Embedder]

# Values are "module:attribute" strings until first use, so that registering costs no import.
_registry: dict[str, str | EmbedderFactory] = {
    "local": "vector_service.embeddings.local:LocalEmbedder",
    "openai": "vector_service.embeddings.openai_provider:OpenAIEmbedder",
    "hash": "vector_service.embeddings.hashing:HashEmbedder",
}
_registry_lock = threading.Lock()


def register_provider(name: str, factory: str | EmbedderFactory) -> None:
    """Adds or replaces a provider: a factory, or a "module:attribute" path to import lazily."""
    if not name:
        raise ValueError("provider name must not be empty")
    if isinstance(factory, str) and ":" not in factory:
        raise ValueError(f"lazy provider path must look like 'module:attribute', got {factory!r}")
    with _registry_lock:
        _registry[name] = factory


def available_providers() -> list[str]:
    with _registry_lock:
        return sorted(_registry)


def _resolve(name: str) -> EmbedderFactory:
    with _registry_lock:
        target = _registry.get(name)
    if target is None:
        known = ", ".join(available_providers())
        raise EmbeddingError(f"unknown embedding provider {name!r} (known: {known})")
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EmbeddingError(
            f"embedding provider {name!r} cannot be loaded: {exc} (is its package installed?)"
        ) from exc
    factory: EmbedderFactory = getattr(module, attribute)
    with _registry_lock:
        # Later lookups skip the import machinery; a concurrent re-registration wins.
        if _registry.get(name) == target:
            _registry[name] = factory
    return factory


def create_embedder(config: EmbedderConfig) -> Embedder:
    """Builds the provider named by config.provider, importing its module on first use.

    Raises EmbeddingError for an unknown provider or a configuration it refuses. Model weights
    and network clients are set up lazily, so this is cheap and does no I/O beyond imports.
    """
    return _resolve(config.provider)(config)


def validate_texts(texts: Sequence[str]) -> list[str]:
    """Checks the input of Embedder.embed and returns it as a list.

    A bare string is refused: iterating it would silently embed one character per row.
    """
    if isinstance(texts, str | bytes):
        raise TypeError("embed() takes a sequence of texts, not a single string")
    items = list(texts)
    for position, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"texts[{position}] is {type(text).__name__}, not str")
    return items


def validate_vectors(
    vectors: NDArray[np.floating], rows: int, dimensions: int, provider: str
) -> NDArray[np.float32]:
    """Enforces the Embedder.embed contract on a provider's output, raising EmbeddingError."""
    if vectors.shape != (rows, dimensions):
        raise EmbeddingError(
            f"{provider} embedder produced shape {vectors.shape}, expected ({rows}, {dimensions})"
        )
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        bad = int(np.count_nonzero(~finite))
        raise EmbeddingError(f"{provider} embedder produced NaN or infinite values in {bad} rows")
    return vectors.astype(np.float32, copy=False)

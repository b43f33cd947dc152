"""Embedding providers of the vector service.

    from vector_service.embeddings import EmbedderConfig, create_embedder
    embedder = create_embedder(EmbedderConfig(provider="local"))
    vectors = embedder.embed(["How much does it cost?"])  # float32, shape (1, 384)

Providers: "local" (all-MiniLM-L6-v2 in numpy, the default), "openai" (any OpenAI-compatible
endpoint) and "hash" (deterministic hashed n-grams, for tests). Each module is imported only
when its provider is created.
"""

from vector_service.embeddings.base import (
    Embedder,
    EmbedderConfig,
    EmbedderFactory,
    EmbeddingError,
    EmbeddingUnavailable,
    available_providers,
    create_embedder,
    register_provider,
    validate_texts,
    validate_vectors,
)

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

"""The vector service's domain errors, as servicekit errors (servicekit.edge maps them to
statuses), and the one place that calls an embedder and translates its failures."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from servicekit import tracing
from servicekit.errors import FailedPrecondition, ServiceError, Unavailable
from vector_service.embeddings import Embedder, EmbeddingError, EmbeddingUnavailable
from vector_service.metrics import (
    EMBEDDING_CALLS,
    EMBEDDING_FAILURES,
    EMBEDDING_SECONDS,
    EMBEDDING_TEXTS,
)

log = logging.getLogger(__name__)

REINDEX_RPC = "loom.vector.v1.VectorService/Reindex"


def model_mismatch(
    table: str,
    collection_api_name: str,
    stored_model: str,
    stored_dimensions: int,
    configured_model: str,
    configured_dimensions: int,
) -> FailedPrecondition:
    return FailedPrecondition(
        f"collection {table} holds {stored_dimensions}-dimensional vectors of model "
        f"{stored_model!r}, but this server embeds with {configured_model!r} "
        f"({configured_dimensions} dimensions); vectors of different models are never mixed. "
        f"Call {REINDEX_RPC} with collection {collection_api_name} to rebuild it with the "
        "configured model (searches keep answering from the old table meanwhile), or restart "
        "with the old model",
        reason="MODEL_MISMATCH",
    )


def embed(embedder: Embedder, texts: Sequence[str]) -> NDArray[np.float32]:
    """Embeds texts, checking the result, and turns provider failures into service errors:
    EmbeddingUnavailable -> UNAVAILABLE (retry later), EmbeddingError -> FAILED_PRECONDITION.
    Never returns a vector of the wrong shape or with NaNs: nothing wrong is ever stored.
    Every call is counted and timed (loom_embedding_*) by provider and model, and is a span
    with tracing on."""
    if not texts:
        return np.empty((0, embedder.dimensions), dtype=np.float32)
    labels = (embedder.name, embedder.model)
    EMBEDDING_CALLS.labels(*labels).inc()
    EMBEDDING_TEXTS.labels(*labels).inc(len(texts))
    started = time.perf_counter()
    attributes = {
        "loom.embedding.provider": embedder.name,
        "loom.embedding.model": embedder.model,
        "loom.embedding.texts": len(texts),
    }
    with tracing.span("embed", attributes):
        try:
            return _embed(embedder, texts)
        except Exception:
            EMBEDDING_FAILURES.labels(*labels).inc()
            raise
        finally:
            EMBEDDING_SECONDS.labels(*labels).observe(time.perf_counter() - started)


def _embed(embedder: Embedder, texts: Sequence[str]) -> NDArray[np.float32]:
    try:
        vectors = embedder.embed(list(texts))
    except EmbeddingUnavailable as exc:
        log.warning("embedding provider %s unavailable: %s", embedder.name, exc)
        raise Unavailable(
            f"the embedding provider {embedder.name} ({embedder.model}) is unavailable: {exc}; "
            "retry later",
            reason="EMBEDDING_UNAVAILABLE",
        ) from exc
    except EmbeddingError as exc:
        log.warning("embedding with %s failed: %s", embedder.name, exc)
        raise FailedPrecondition(
            f"embedding with {embedder.name} model {embedder.model} failed: {exc}",
            reason="EMBEDDING_FAILED",
        ) from exc
    array = np.asarray(vectors)
    expected = (len(texts), embedder.dimensions)
    if array.shape != expected or not np.isfinite(array).all():
        # The provider broke its contract; storing this would be a silent wrong answer.
        raise ServiceError(
            f"embedding provider {embedder.name} returned vectors of shape {array.shape} "
            f"(expected {expected}) or with non-finite values; nothing was stored",
            reason="EMBEDDING_INVALID",
        )
    return array.astype(np.float32, copy=False)

"""Search across collections: vector, full text, or both fused by reciprocal rank.

Every (collection, method) pair yields one ranked list, filtered by scope before ranking. The
lists are fused by reciprocal-rank fusion (Cormack et al. 2009): a document's score is the sum,
over the lists that found it, of 1 / (k + rank), k = 60, rank from 1. Ranks rather than raw
scores, because BM25 scores of different tables (different corpus statistics) and cosine
distances are on incomparable scales; the raw distance and BM25 score are returned beside.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from servicekit.errors import FailedPrecondition
from vector_service.embeddings import Embedder, EmbedderConfig, EmbeddingError, create_embedder
from vector_service.query_cache import QueryCache
from vector_service.store import Collection, ReadView, Scope, VectorSpace, VectorStore
from vector_service.store.rows import DISTANCE_COLUMN, ID_COLUMN, SCORE_COLUMN
from vector_service.tier import SearchTier

RRF_K = 60
MAX_CANDIDATES = 200


class Mode(Enum):
    VECTOR = "vector"
    FULL_TEXT = "full_text"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class Query:
    collections: list[Collection]
    scope: Scope
    text: str
    vector: NDArray[np.float32] | None
    vector_model: str
    mode: Mode
    limit: int


@dataclass
class Hit:
    collection: Collection
    row: dict[str, Any]
    score: float = 0.0
    vector_distance: float | None = None
    text_score: float | None = None


def candidates_per_list(limit: int) -> int:
    """How deep each list is read: deeper than `limit`, so that fusion can promote a document
    that is second-best in several lists over one that is best in a single list."""
    return min(max(2 * limit, 20), MAX_CANDIDATES)


def fuse(lists: list[tuple[Collection, str, list[dict[str, Any]]]], limit: int) -> list[Hit]:
    hits: dict[tuple[Collection, str], Hit] = {}
    for collection, kind, rows in lists:
        for rank, row in enumerate(rows, start=1):
            key = (collection, row[ID_COLUMN])
            hit = hits.get(key)
            if hit is None:
                hit = hits[key] = Hit(collection, row)
            hit.score += 1.0 / (RRF_K + rank)
            if kind == "vector":
                hit.vector_distance = float(row[DISTANCE_COLUMN])
            else:
                hit.text_score = float(row[SCORE_COLUMN])

    def order(hit: Hit) -> tuple[float, float, float, str, str]:
        distance = hit.vector_distance if hit.vector_distance is not None else float("inf")
        text = hit.text_score if hit.text_score is not None else 0.0
        return (-hit.score, distance, -text, hit.collection.value, hit.row[ID_COLUMN])

    return sorted(hits.values(), key=order)[:limit]


class Searcher:
    """Runs queries against the store with the configured embedder. During a reindex that
    changes the model, the old table is searched with its own model, loaded on demand. Vector
    lists come from the search tier when it holds the team, from LanceDB otherwise."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        base: EmbedderConfig,
        tier: SearchTier | None = None,
        query_cache: QueryCache | None = None,
    ) -> None:
        self._store = store
        self._tier = tier
        self._query_cache = query_cache or QueryCache(0)
        self._embedder = embedder
        self._space = VectorSpace.of(embedder)
        self._base = base
        self._others: dict[VectorSpace, Embedder] = {}
        self._others_lock = threading.Lock()

    def _embedder_for(self, space: VectorSpace) -> Embedder:
        if space.same_vectors(self._space):
            return self._embedder
        with self._others_lock:
            found = self._others.get(space)
            if found is not None:
                return found
            try:
                other = create_embedder(
                    replace(
                        self._base,
                        provider=space.provider,
                        model=space.model,
                        dimensions=space.dimensions,
                    )
                )
            except EmbeddingError as exc:
                raise FailedPrecondition(
                    f"a reindex is replacing a table of model {space.model!r}, which cannot be "
                    f"loaded here to embed the query ({exc}); search with FULL_TEXT or with a "
                    "query_vector of that model until the reindex completes",
                    reason="MODEL_MISMATCH",
                ) from exc
            if not VectorSpace.of(other).same_vectors(space):
                raise FailedPrecondition(
                    f"the old model {space.model!r} now loads as {other.model!r} "
                    f"({other.dimensions} dimensions); search with FULL_TEXT until the reindex "
                    "completes",
                    reason="MODEL_MISMATCH",
                )
            self._others[space] = other
            return other

    def search(self, query: Query) -> list[Hit]:
        k = candidates_per_list(query.limit)
        lists: list[tuple[Collection, str, list[dict[str, Any]]]] = []
        query_vectors: dict[VectorSpace, NDArray[np.float32]] = {}
        uses_vectors = query.mode in (Mode.VECTOR, Mode.HYBRID)
        uses_text = query.mode in (Mode.FULL_TEXT, Mode.HYBRID)
        views: list[ReadView] = []
        for collection in query.collections:
            view, reindexing = self._store.read_view(collection)
            if view is None:
                continue  # nothing written yet: no results, not an error
            space = view.handle.space
            if uses_vectors:
                if not space.same_vectors(self._space) and not reindexing:
                    raise self._store.mismatch_error(view)
                self._check_query_vector(query, view)
            views.append(view)
        # One vector list is already the answer's order: read it only `limit` deep.
        vector_depth = query.limit if len(views) == 1 and not uses_text else k
        for view in views:
            space = view.handle.space
            if uses_vectors:
                vector = query.vector
                if vector is None:
                    if space not in query_vectors:
                        embedder = self._embedder_for(space)
                        query_vectors[space] = self._query_cache.vector(embedder, query.text)
                    vector = query_vectors[space]
                found = None
                if self._tier is not None:
                    found = self._tier.vector_search(view, vector, query.scope, vector_depth)
                if found is None:
                    table = self._store.vector_search(view, vector, query.scope, vector_depth)
                    found = table.to_pylist()
                    if self._tier is not None:
                        self._tier.missed(view, query.scope)
                lists.append((view.collection, "vector", found))
            if uses_text:
                rows = self._store.text_search(view, query.text, query.scope, k).to_pylist()
                lists.append((view.collection, "text", rows))
        return fuse(lists, query.limit)

    @staticmethod
    def _check_query_vector(query: Query, view: ReadView) -> None:
        if query.vector is None:
            return
        space = view.handle.space
        if query.vector_model and query.vector_model != space.model:
            raise FailedPrecondition(
                f"query_vector was made by {query.vector_model!r}, but collection "
                f"{view.handle.name} holds vectors of {space.model!r}; vectors of different "
                "models are never compared",
                reason="MODEL_MISMATCH",
            )
        if query.vector.shape[0] != space.dimensions:
            raise FailedPrecondition(
                f"query_vector has {query.vector.shape[0]} dimensions, but collection "
                f"{view.handle.name} holds {space.dimensions}-dimensional vectors of "
                f"{space.model!r}; embed the query with that model (EmbedTexts)",
                reason="DIMENSION_MISMATCH",
            )

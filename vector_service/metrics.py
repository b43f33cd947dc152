"""vector_service's Prometheus families (servicekit.metrics serves them): embedding calls by
provider and model, searches by mode, and upserted documents by outcome. The per-collection
table gauges are computed when Prometheus scrapes (vector_service.gauges)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

from servicekit.metrics import LATENCY_BUCKETS

_MODEL = ("provider", "model")
EMBEDDING_CALLS: Final = Counter(
    "loom_embedding_calls_total", "Calls to the embedding model (one batch each).", _MODEL
)
EMBEDDING_TEXTS: Final = Counter(
    "loom_embedding_texts_total", "Texts given to the embedding model.", _MODEL
)
EMBEDDING_FAILURES: Final = Counter(
    "loom_embedding_failures_total",
    "Embedding calls that failed (provider down, refused input, a broken result).",
    _MODEL,
)
EMBEDDING_SECONDS: Final = Histogram(
    "loom_embedding_seconds",
    "Time of one call to the embedding model.",
    _MODEL,
    buckets=LATENCY_BUCKETS,
)
SEARCH_SECONDS: Final = Histogram(
    "loom_vector_search_seconds",
    "Time of one search (embedding the query, each list, the fusion), by mode.",
    ["mode"],
    buckets=LATENCY_BUCKETS,
)
UPSERTED_DOCUMENTS: Final = Counter(
    "loom_vector_upserted_documents_total",
    "Documents written by UpsertDocuments, by collection and outcome (unchanged: same text "
    "as stored, no model call).",
    ["collection", "outcome"],
)

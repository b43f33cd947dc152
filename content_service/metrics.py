"""content_service's Prometheus families (servicekit.metrics serves them): the index outbox's
deliveries and the image job leases. The gauges that need a query (outbox rows, jobs by
state, the database's files and pools) are computed when Prometheus scrapes
(content_service.gauges); the database's own counters are in content_service.db.metrics."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

from servicekit.metrics import LATENCY_BUCKETS

OUTBOX_DELIVERY_ATTEMPTS: Final = Counter(
    "loom_outbox_delivery_attempts_total",
    "Deliveries of outbox rows to vector_service tried: one per batch, and one per source "
    "when a refused batch is retried source by source.",
)
OUTBOX_DELIVERY_FAILURES: Final = Counter(
    "loom_outbox_delivery_failures_total",
    "Deliveries that failed (their rows stay, retried after a backoff), by gRPC code.",
    ["grpc_code"],
)
OUTBOX_DELIVERED_ROWS: Final = Counter(
    "loom_outbox_delivered_rows_total", "Outbox rows delivered to vector_service and deleted."
)
OUTBOX_EMBEDDED_TEXTS: Final = Counter(
    "loom_outbox_embedded_texts_total",
    "Texts vector_service embedded for deliveries (an unchanged text costs none).",
)
OUTBOX_DELIVERY_SECONDS: Final = Histogram(
    "loom_outbox_delivery_seconds",
    "Time of one delivery: building the documents, the calls to vector_service, deleting the rows.",
    buckets=LATENCY_BUCKETS,
)
IMAGE_LEASE_EXPIRIES: Final = Counter(
    "loom_image_lease_expiries_total",
    "Image job leases that ran out before their job ended, found by a later claim (the "
    "image is claimed again, or fails when that was its last attempt).",
)

"""image_worker's Prometheus families (servicekit.metrics serves them on WORKER_METRICS_PORT):
jobs by how they ended, the time of each stage of a job, and the bytes in and out."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

JOBS_CLAIMED: Final = Counter("loom_worker_jobs_claimed_total", "Image jobs claimed.")
JOBS_ENDED: Final = Counter(
    "loom_worker_jobs_total",
    "Image jobs ended, by outcome: completed; failed (a bad image, for good); retried (a "
    "transient fault: given back to the queue); released (given back at shutdown); dropped "
    "(the lease was lost or the image deleted: nothing to report).",
    ["outcome"],
)
JOBS_IN_PROGRESS: Final = Gauge("loom_worker_jobs_in_progress", "Image jobs being worked on.")
STAGE_SECONDS: Final = Histogram(
    "loom_worker_stage_seconds",
    "Time of each stage of a job: download, decode, resize, encode (per format, its "
    "variants summed; the encoders run side by side), metadata, vision, upload (all "
    "variants), index (with its retries), complete.",
    ["stage", "format"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
DOWNLOADED_BYTES: Final = Counter(
    "loom_worker_downloaded_bytes_total", "Bytes of originals downloaded from content_service."
)
UPLOADED_BYTES: Final = Counter(
    "loom_worker_uploaded_bytes_total",
    "Bytes of variants uploaded to content_service, by format.",
    ["format"],
)
CLAIM_ERRORS: Final = Counter(
    "loom_worker_claim_errors_total",
    "ClaimImageJob calls that failed, by gRPC code.",
    ["grpc_code"],
)

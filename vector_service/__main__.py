"""`python -m vector_service`: serves until SIGTERM/SIGINT, then drains gracefully."""

from __future__ import annotations

import os

# One BLAS thread per call: requests already run on several threads, and OpenBLAS's own
# threads collapsed on a busy 2-core machine (16-44 vs 69-93 sentences/s, bench/embedder.py).
# Set before numpy is imported; an explicit setting in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import logging
import sys

from servicekit import logs, tracing
from servicekit.server import serve_main
from vector_service.embeddings import EmbeddingError
from vector_service.server import create_server, loaded_embedder
from vector_service.settings import VectorSettings

log = logging.getLogger("vector_service")


def main(argv: list[str] | None = None) -> int:
    if argv:
        print("usage: python -m vector_service (configured by environment variables)")
        return 2
    settings = VectorSettings()
    logs.configure(settings.log_level, settings.log_format)
    tracing.configure(settings.traces, "vector_service")
    try:
        embedder = loaded_embedder(settings)
    except EmbeddingError as exc:
        log.error("cannot set up the %s embedder: %s", settings.provider, exc)
        return 2
    return serve_main(
        lambda: create_server(settings, embedder=embedder),
        what="vector_service",
        grace=settings.grace_seconds,
        port_setting="VECTOR_PORT",
        metrics_setting="VECTOR_METRICS_PORT",
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

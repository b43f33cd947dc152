"""create_server(settings): the vector service with its interceptor, servicer, health and
reflection, bound to the configured port (0 picks a free one; the bound port is returned)."""

from __future__ import annotations

import logging

from loom.vector.v1 import vector_pb2, vector_pb2_grpc

from servicekit.edge import EdgeInterceptor
from servicekit.server import MetricsOptions, Running, Service, build_server
from vector_service.api import VectorServicer
from vector_service.authn import TenancyClient, TenantKeyResolver, VectorAuthenticator
from vector_service.backup import backup_service
from vector_service.embeddings import Embedder, create_embedder
from vector_service.gauges import VectorGauges
from vector_service.query_cache import QueryCache
from vector_service.search import Searcher
from vector_service.settings import VectorSettings
from vector_service.store import StoreOptions, VectorSpace, VectorStore
from vector_service.tier import SearchTier, TierOptions, one_blas_thread

log = logging.getLogger(__name__)


def loaded_embedder(settings: VectorSettings) -> Embedder:
    """The configured embedder with its model weights read now, so that a missing model fails
    the start rather than a request. Raises EmbeddingError."""
    embedder = create_embedder(settings.embedder_config())
    load = getattr(embedder, "load", None)
    if callable(load):
        load()
    return embedder


def store_options(settings: VectorSettings) -> StoreOptions:
    return StoreOptions(
        index_threshold_rows=settings.index_threshold_rows,
        index_partition_rows=settings.index_partition_rows,
        nprobes=settings.search_nprobes,
        refine_factor=settings.search_refine_factor,
        maintenance_writes=settings.maintenance_writes,
        maintenance_seconds=settings.maintenance_seconds,
        storage=settings.storage_options(),
    )


def create_server(settings: VectorSettings, *, embedder: Embedder | None = None) -> Running:
    """Opens LanceDB, builds the embedder (lazily loading weights or clients), and wires the
    server. `embedder` replaces the configured one (tests wrap the real one to count calls).
    Raises EmbeddingError for an embedder configuration the provider refuses."""
    model = embedder or create_embedder(settings.embedder_config())
    store = VectorStore(settings.database_uri, VectorSpace.of(model), store_options(settings))
    token = settings.token()
    tenants = TenantKeyResolver(
        TenancyClient(settings.content_address, token, timeout=settings.content_timeout_seconds),
        ttl=settings.auth_cache_seconds,
        negative_ttl=settings.auth_negative_cache_seconds,
    )
    tier = SearchTier(
        store,
        TierOptions(
            max_bytes=settings.tier_max_bytes,
            exact_max_rows=settings.tier_exact_max_rows,
            partition_rows=settings.tier_partition_rows,
        ),
    )
    store.observe(tier)
    queries = QueryCache(settings.query_cache_entries)
    searcher = Searcher(store, model, settings.embedder_config(), tier, queries)
    servicer = VectorServicer(store, searcher, model, tier)
    running = build_server(
        services=[
            Service.of(vector_pb2, vector_pb2_grpc, "VectorService", servicer),
            backup_service(store, settings.backup_root_paths()),
        ],
        interceptors=[
            EdgeInterceptor(VectorAuthenticator(token, tenants), page_token_secret=token)
        ],
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        metrics=(
            None
            if settings.metrics_port is None
            else MetricsOptions(settings.metrics_host, settings.metrics_port, [VectorGauges(store)])
        ),
    )
    restore_blas = one_blas_thread()
    store.start()
    tier.start()
    running.on_stop.append(store.close)
    running.on_stop.append(tier.close)
    running.on_stop.append(restore_blas)
    running.on_stop.append(tenants.close)
    log.info(
        "vector_service: LanceDB at %s, embedder %s (%s, %d dimensions)",
        settings.database_uri,
        model.name,
        model.model,
        model.dimensions,
    )
    return running

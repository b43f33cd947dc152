"""create_server(settings): the content service with its interceptor, servicers, health and
reflection, bound to the configured port (0 picks a free one; the bound port is returned)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from loom.content.v1 import (
    backup_pb2,
    backup_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    clone_pb2,
    clone_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    indexing_pb2,
    indexing_pb2_grpc,
    navigation_pb2,
    navigation_pb2_grpc,
    pages_pb2,
    pages_pb2_grpc,
    posts_pb2,
    posts_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
    settings_pb2,
    settings_pb2_grpc,
    tenancy_pb2,
    tenancy_pb2_grpc,
)

from content_service.api.backup import BackupServicer
from content_service.api.chat import ChatServicer
from content_service.api.clone import EnvironmentCloneServicer
from content_service.api.image_jobs import ImageJobServicer
from content_service.api.images import ImageServicer
from content_service.api.indexing import IndexingServicer
from content_service.api.navigation import NavigationServicer
from content_service.api.pages import PageServicer
from content_service.api.posts import PostServicer
from content_service.api.search import SearchServicer
from content_service.api.site_settings import SiteSettingsServicer
from content_service.api.tenancy import TenancyServicer
from content_service.authn import ContentAuthenticator, KeyCache
from content_service.db.engine import Database, SqliteOptions
from content_service.db.migrate import ensure_current
from content_service.gauges import DatabaseGauges, ImageJobGauges, OutboxGauges
from content_service.images.http import MediaApp, MediaHttpServer
from content_service.images.media import MediaStore
from content_service.images.runtime import ImageRuntime
from content_service.images.urls import MediaUrls
from content_service.indexing.dispatcher import Dispatcher
from content_service.indexing.vector_client import VectorClient
from content_service.settings import ContentSettings
from servicekit.auth import load_or_create_secret
from servicekit.edge import EdgeInterceptor
from servicekit.server import MetricsOptions, Running, Service, build_server, check_free

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Secrets:
    admin_key: str
    service_token: str


def load_secrets(settings: ContentSettings) -> Secrets:
    admin = settings.admin_key
    if not admin:
        path = settings.data_dir / "admin.key"
        admin, created = load_or_create_secret(path, "loomadmin")
        if created:
            log.warning(
                "generated an admin key in %s (0600). Use it as: "
                'grpcurl -plaintext -H "authorization: Bearer $(cat %s)" ...',
                path,
                path,
            )
    return Secrets(admin_key=admin, service_token=settings.token())


def open_database(settings: ContentSettings) -> Database:
    return Database(
        settings.database_url,
        sqlite=SqliteOptions(busy_timeout_ms=settings.sqlite_busy_timeout_ms),
        pool_size=settings.db_pool_size,
    )


def metrics_options(settings: ContentSettings, db: Database) -> MetricsOptions | None:
    """Where the Prometheus endpoint listens (None: CONTENT_METRICS_PORT is off), and the
    gauges computed when it is scraped."""
    if settings.metrics_port is None:
        return None
    return MetricsOptions(
        settings.metrics_host,
        settings.metrics_port,
        [OutboxGauges(db), ImageJobGauges(db), DatabaseGauges(db)],
    )


def create_server(settings: ContentSettings, database: Database | None = None) -> Running:
    db = database or open_database(settings)
    ensure_current(db)
    secrets = load_secrets(settings)
    client = dispatcher = None
    if settings.vector_address:
        address, token = settings.vector_address, secrets.service_token
        client = VectorClient(address, token, timeout=settings.vector_timeout_seconds)
        dispatcher = Dispatcher(
            db,
            # A channel of its own: Dispatcher.stop closes it to cancel a delivery in flight.
            VectorClient(address, token, timeout=settings.vector_timeout_seconds),
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
            backoff_cap_seconds=settings.outbox_backoff_cap_seconds,
        )
    # Media over HTTP first: the URLs the servicers hand out need its bound port.
    media = MediaStore(settings.media_dir)
    check_free(settings.media_http_host, settings.media_http_port)
    media_http = MediaHttpServer(
        MediaApp(db, media), settings.media_http_host, settings.media_http_port
    )
    urls = MediaUrls(settings.media_public_url or media_http.url)
    try:
        running = _grpc_server(settings, db, secrets, client, dispatcher, media, urls)
    except BaseException:
        media_http.stop()
        raise
    log.info(
        "media served over HTTP at %s/ (read-only; URLs handed out under %s/)",
        media_http.url,
        urls.base,
    )
    running.listeners["media_http"] = media_http.port
    running.on_stop.append(media_http.stop)  # before the database is disposed (below)
    checkpointer = db.checkpointer()
    if checkpointer is not None:
        checkpointer.start()
        running.on_stop.append(checkpointer.stop)
    if dispatcher is not None:
        dispatcher.start()
        running.on_stop.append(dispatcher.stop)
    if client is not None:
        running.on_stop.append(client.close)
    if database is None:
        running.on_stop.append(db.dispose)
    return running


def _grpc_server(
    settings: ContentSettings,
    db: Database,
    secrets: Secrets,
    client: VectorClient | None,
    dispatcher: Dispatcher | None,
    media: MediaStore,
    urls: MediaUrls,
) -> Running:
    """The gRPC server with every servicer, bound, not started."""
    images = ImageRuntime.start(db, settings, media, urls)
    keys = KeyCache(settings.auth_cache_seconds)
    services = [
        Service.of(tenancy_pb2, tenancy_pb2_grpc, "TenancyService", TenancyServicer(db, keys)),
        Service.of(pages_pb2, pages_pb2_grpc, "PageService", PageServicer(db)),
        Service.of(posts_pb2, posts_pb2_grpc, "PostService", PostServicer(db)),
        Service.of(
            navigation_pb2, navigation_pb2_grpc, "NavigationService", NavigationServicer(db)
        ),
        Service.of(
            settings_pb2, settings_pb2_grpc, "SiteSettingsService", SiteSettingsServicer(db)
        ),
        Service.of(chat_pb2, chat_pb2_grpc, "ChatService", ChatServicer(db)),
        Service.of(search_pb2, search_pb2_grpc, "SearchService", SearchServicer(db)),
        Service.of(
            clone_pb2, clone_pb2_grpc, "EnvironmentCloneService", EnvironmentCloneServicer(db)
        ),
        Service.of(images_pb2, images_pb2_grpc, "ImageService", ImageServicer(images)),
        Service.of(images_pb2, images_pb2_grpc, "ImageJobService", ImageJobServicer(images)),
        Service.of(backup_pb2, backup_pb2_grpc, "BackupService", BackupServicer(db, settings)),
        Service.of(
            indexing_pb2,
            indexing_pb2_grpc,
            "IndexingService",
            IndexingServicer(db, dispatcher, client),
        ),
    ]
    return build_server(
        services=services,
        interceptors=[
            EdgeInterceptor(
                ContentAuthenticator(db, secrets.admin_key, secrets.service_token, keys),
                page_token_secret=secrets.service_token,
            )
        ],
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        metrics=metrics_options(settings, db),
    )

"""create_server(settings): the content service with its interceptor, servicers, health and
reflection, bound to the configured port (0 picks a free one; the bound port is returned)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from loom.content.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    clone_pb2,
    clone_pb2_grpc,
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

from content_service.api.backup import backup_service
from content_service.api.chat import ChatServicer
from content_service.api.clone import EnvironmentCloneServicer
from content_service.api.images import image_services
from content_service.api.indexing import IndexingServicer
from content_service.api.navigation import NavigationServicer
from content_service.api.pages import PageServicer
from content_service.api.posts import PostServicer
from content_service.api.search import SearchServicer
from content_service.api.site_settings import SiteSettingsServicer
from content_service.api.tenancy import TenancyServicer
from content_service.authn import ContentAuthenticator
from content_service.db.engine import Database, SqliteOptions
from content_service.db.migrate import ensure_current
from content_service.dispatcher import Dispatcher
from content_service.settings import ContentSettings
from content_service.vector_client import VectorClient
from servicekit.auth import load_or_create_secret
from servicekit.edge import EdgeInterceptor
from servicekit.server import Running, Service, build_server

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
    token = (
        settings.service_token
        or load_or_create_secret(settings.data_dir / "service.token", "loomsvc")[0]
    )
    return Secrets(admin_key=admin, service_token=token)


def open_database(settings: ContentSettings) -> Database:
    return Database(
        settings.database_url,
        sqlite=SqliteOptions(busy_timeout_ms=settings.sqlite_busy_timeout_ms),
        pool_size=settings.db_pool_size,
    )


def create_server(settings: ContentSettings, database: Database | None = None) -> Running:
    db = database or open_database(settings)
    ensure_current(db)
    secrets = load_secrets(settings)
    client = dispatcher = None
    if settings.vector_address:
        client = VectorClient(
            settings.vector_address,
            secrets.service_token,
            timeout=settings.vector_timeout_seconds,
        )
        dispatcher = Dispatcher(
            db,
            VectorClient(
                settings.vector_address,
                secrets.service_token,
                timeout=settings.vector_timeout_seconds,
            ),
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
            backoff_cap_seconds=settings.outbox_backoff_cap_seconds,
        )
    services = [
        Service(
            tenancy_pb2.DESCRIPTOR.services_by_name["TenancyService"].full_name,
            tenancy_pb2_grpc.add_TenancyServiceServicer_to_server,
            TenancyServicer(db),
        ),
        Service(
            pages_pb2.DESCRIPTOR.services_by_name["PageService"].full_name,
            pages_pb2_grpc.add_PageServiceServicer_to_server,
            PageServicer(db),
        ),
        Service(
            posts_pb2.DESCRIPTOR.services_by_name["PostService"].full_name,
            posts_pb2_grpc.add_PostServiceServicer_to_server,
            PostServicer(db),
        ),
        Service(
            navigation_pb2.DESCRIPTOR.services_by_name["NavigationService"].full_name,
            navigation_pb2_grpc.add_NavigationServiceServicer_to_server,
            NavigationServicer(db),
        ),
        Service(
            settings_pb2.DESCRIPTOR.services_by_name["SiteSettingsService"].full_name,
            settings_pb2_grpc.add_SiteSettingsServiceServicer_to_server,
            SiteSettingsServicer(db),
        ),
        Service(
            chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
            chat_pb2_grpc.add_ChatServiceServicer_to_server,
            ChatServicer(db),
        ),
        Service(
            search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name,
            search_pb2_grpc.add_SearchServiceServicer_to_server,
            SearchServicer(db),
        ),
        Service(
            clone_pb2.DESCRIPTOR.services_by_name["EnvironmentCloneService"].full_name,
            clone_pb2_grpc.add_EnvironmentCloneServiceServicer_to_server,
            EnvironmentCloneServicer(db),
        ),
        *image_services(db, settings),
        backup_service(db, settings),
        Service(
            indexing_pb2.DESCRIPTOR.services_by_name["IndexingService"].full_name,
            indexing_pb2_grpc.add_IndexingServiceServicer_to_server,
            IndexingServicer(db, dispatcher, client),
        ),
    ]
    running = build_server(
        services=services,
        interceptors=[
            EdgeInterceptor(ContentAuthenticator(db, secrets.admin_key, secrets.service_token))
        ],
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
    )
    if dispatcher is not None:
        dispatcher.start()
        running.on_stop.append(dispatcher.stop)
    if client is not None:
        running.on_stop.append(client.close)
    if database is None:
        running.on_stop.append(db.dispose)
    return running

"""Backup test support: the real servers, in process on loopback, over one data folder the way
`make run` lays it out (DATA_DIR/content.db, DATA_DIR/media, DATA_DIR/lancedb): content_service
with its index dispatcher pointed at vector_service (hash embedder), and optionally an image
worker. A backup is taken through the real RPCs by the real command code."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from loom.content.v1 import images_pb2, images_pb2_grpc, indexing_pb2, indexing_pb2_grpc
from loom.vector.v1 import vector_pb2, vector_pb2_grpc

from content_service.db.engine import Database
from content_service.db.migrate import upgrade
from image_worker.worker import Worker
from loom_backup.progress import Printer
from loom_backup.settings import BackupSettings
from tests.content.tenants_and_pages import Tenant, make_definition, make_tenant, struct
from tests.forwarder import Forwarder
from tests.images.helpers import download, upload
from tests.support import (
    SERVICE_TOKEN,
    Clients,
    ContentServer,
    Stub,
    VectorServer,
    content_settings,
    hash_embedder,
    start_content,
    vector_settings,
    wait_until,
    worker_settings,
)


@pytest.fixture
def backend() -> str:
    """SQLite unless a test says otherwise (tests/backup/test_postgres.py)."""
    return "sqlite"


@dataclass
class LiveStack:
    data_dir: Path
    db: Database
    vector: VectorServer
    content: ContentServer
    workers: list[Worker] = field(default_factory=list)
    stopped: bool = False

    @property
    def admin(self) -> Clients:
        return self.content.admin

    @property
    def indexing(self) -> Stub:
        return Stub(indexing_pb2_grpc.IndexingServiceStub(self.content.channel), SERVICE_TOKEN)

    @property
    def vectors(self) -> Stub:
        return Stub(vector_pb2_grpc.VectorServiceStub(self.vector.channel), SERVICE_TOKEN)

    def settings(self) -> BackupSettings:
        return BackupSettings(
            data_dir=self.data_dir,
            content_address=self.content.address,
            vector_address=self.vector.address,
            service_token=SERVICE_TOKEN,
        )

    def drained(self, timeout: float = 30.0) -> None:
        def pending() -> bool:
            status = self.indexing.GetIndexingStatus(indexing_pb2.GetIndexingStatusRequest())
            return int(status.pending_count) == 0

        wait_until(pending, timeout, "the index outbox to drain")

    def start_worker(self) -> Worker:
        worker = Worker(
            worker_settings(
                self.data_dir,
                self.content.address,
                self.vector.address,
                name=f"backup-test-worker-{len(self.workers) + 1}",
                concurrency=2,
                widths=(48,),
                formats=("webp",),
                claim_wait_seconds=1.0,
                retry_backoff_seconds=0.1,
                retry_backoff_max_seconds=0.4,
                grace_seconds=5.0,
            )
        )
        worker.start()
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for worker in self.workers:
            worker.stop(grace=2)
        self.workers.clear()
        self.content.stop(grace=2)
        self.vector.close(grace=2)
        self.db.dispose()


def start_stack(data_dir: Path, db_url: str | None = None) -> LiveStack:
    """vector_service, then content_service with its dispatcher pointed at it, both over
    data_dir (SQLite at data_dir/content.db unless db_url names another database)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # vector_service resolves tenant keys through content_service, which starts after it.
    forwarder = Forwarder()
    vector = VectorServer(
        vector_settings(
            data_dir,
            # LanceDB where `make run` keeps it (DATA_DIR/lancedb), and the service's own
            # timeout for asking content_service about a tenant key (through the forwarder).
            lancedb_uri="",
            content_address=forwarder.address,
            content_timeout_seconds=2.0,
        ),
        hash_embedder(),
    )
    url = db_url or f"sqlite:///{data_dir / 'content.db'}"
    db = Database(url)
    upgrade(db)
    settings = content_settings(
        data_dir,
        url,
        vector_address=vector.address,
        outbox_poll_seconds=0.1,
        lease_seconds=2,
    )
    content = start_content(settings, db)
    forwarder.point_at(content.address)
    content.running.on_stop.append(forwarder.close)
    return LiveStack(data_dir=data_dir, db=db, vector=vector, content=content)


@pytest.fixture
def stacks() -> Iterator[Callable[..., LiveStack]]:
    """`stacks(data_dir, db_url=None)` starts a stack; every stack started is stopped at the
    end (a test may stop one itself first)."""
    started: list[LiveStack] = []

    def start(data_dir: Path, db_url: str | None = None) -> LiveStack:
        stack = start_stack(data_dir, db_url)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


def quiet() -> Printer:
    return Printer(io.StringIO())


# ------------------------------------------------------------------------------ content


@dataclass
class Site:
    """A tenant with a section definition, and what was written into it."""

    tenant: Tenant
    definition_id: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create_page(self, slug: str, words: str) -> Any:
        from loom.content.v1 import pages_pb2

        return self.tenant.client.pages.CreatePage(
            pages_pb2.CreatePageRequest(
                environment_id=self.tenant.env_id,
                page=pages_pb2.Page(
                    slug=slug,
                    title=f"Page {slug}",
                    sections=[
                        pages_pb2.Section(
                            definition_id=self.definition_id, content=struct({"title": words})
                        )
                    ],
                ),
            )
        )

    @property
    def images(self) -> Stub:
        return self.tenant.client.stub(images_pb2_grpc.ImageServiceStub)

    def upload(self, data: bytes, filename: str) -> images_pb2.Image:
        return upload(
            self.images,
            self.tenant.env_id,
            data,
            filename=filename,
            mime_type="",
            alt_text=filename,
            chunk=len(data),
        )

    def download(self, image_id: str, variant: tuple[int, str] | None = None) -> bytes:
        return download(self.images, image_id, variant)[1]


def make_site(stack: LiveStack, name: str = "acme") -> Site:
    tenant = make_tenant(stack.admin, name)
    return Site(tenant, make_definition(tenant).id)


def site_on(stack: LiveStack, site: Site) -> Site:
    """The same tenant, reached through another (restored) stack."""
    client = Clients(stack.content.channel, site.tenant.key)
    tenant = Tenant(
        site.tenant.team_id, site.tenant.key, site.tenant.site_id, site.tenant.env_id, client
    )
    return Site(tenant, site.definition_id)


def search_pages(stack: LiveStack, site: Site, text: str, limit: int = 10) -> list[str]:
    answer = stack.vectors.Search(
        vector_pb2.SearchRequest(
            collections=[vector_pb2.COLLECTION_PAGES],
            scope=vector_pb2.Scope(team_id=site.tenant.team_id),
            query_text=text,
            mode=vector_pb2.SEARCH_MODE_VECTOR,
            limit=limit,
        )
    )
    return [r.document.source_id for r in answer.results]

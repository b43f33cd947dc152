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

import grpc
import pytest
from loom.content.v1 import images_pb2, images_pb2_grpc, indexing_pb2, indexing_pb2_grpc
from loom.vector.v1 import vector_pb2, vector_pb2_grpc

from content_service.db.engine import Database
from content_service.db.migrate import upgrade
from content_service.server import create_server as create_content_server
from image_worker.settings import WorkerSettings
from image_worker.worker import Worker
from loom_backup.progress import Printer
from loom_backup.settings import BackupSettings
from servicekit.server import Running
from tests.conftest import content_settings
from tests.content.flows import Tenant, make_definition, make_tenant, struct
from tests.images.helpers import download, upload
from tests.integration.stack import Forwarder
from tests.support import ADMIN_KEY, SERVICE_TOKEN, Clients, Stub, wait_until
from vector_service.server import create_server as create_vector_server
from vector_service.settings import VectorSettings


@pytest.fixture
def backend() -> str:
    """SQLite unless a test says otherwise (tests/backup/test_postgres.py)."""
    return "sqlite"


@dataclass
class LiveStack:
    data_dir: Path
    db: Database
    vector: Running
    content: Running
    content_channel: grpc.Channel
    vector_channel: grpc.Channel
    workers: list[Worker] = field(default_factory=list)
    stopped: bool = False

    @property
    def content_address(self) -> str:
        return f"127.0.0.1:{self.content.port}"

    @property
    def vector_address(self) -> str:
        return f"127.0.0.1:{self.vector.port}"

    @property
    def admin(self) -> Clients:
        return Clients(self.content_channel, ADMIN_KEY)

    @property
    def indexing(self) -> Stub:
        return Stub(indexing_pb2_grpc.IndexingServiceStub(self.content_channel), SERVICE_TOKEN)

    @property
    def vectors(self) -> Stub:
        return Stub(vector_pb2_grpc.VectorServiceStub(self.vector_channel), SERVICE_TOKEN)

    def settings(self) -> BackupSettings:
        return BackupSettings(
            data_dir=self.data_dir,
            content_address=self.content_address,
            vector_address=self.vector_address,
            service_token=SERVICE_TOKEN,
        )

    def drained(self, timeout: float = 30.0) -> None:
        def pending() -> bool:
            status = self.indexing.GetIndexingStatus(indexing_pb2.GetIndexingStatusRequest())
            return int(status.pending_count) == 0

        wait_until(pending, timeout, "the index outbox to drain")

    def start_worker(self) -> Worker:
        worker = Worker(
            WorkerSettings(
                data_dir=self.data_dir,
                service_token=SERVICE_TOKEN,
                content_address=self.content_address,
                vector_address=self.vector_address,
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
        self.content_channel.close()
        self.vector_channel.close()
        self.content.stop(grace=2)
        self.vector.stop(grace=2)
        self.db.dispose()


def start_stack(data_dir: Path, db_url: str | None = None) -> LiveStack:
    """vector_service, then content_service with its dispatcher pointed at it, both over
    data_dir (SQLite at data_dir/content.db unless db_url names another database)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # vector_service resolves tenant keys through content_service, which starts after it.
    forwarder = Forwarder()
    vector = create_vector_server(
        VectorSettings(
            data_dir=data_dir,
            embedder="hash",
            port=0,
            service_token=SERVICE_TOKEN,
            content_address=forwarder.address,
        )
    )
    vector.server.start()
    url = db_url or f"sqlite:///{data_dir / 'content.db'}"
    db = Database(url)
    upgrade(db)
    settings = content_settings(
        data_dir,
        url,
        vector_address=f"127.0.0.1:{vector.port}",
        outbox_poll_seconds=0.1,
        lease_seconds=2,
    )
    content = create_content_server(settings, database=db)
    content.server.start()
    forwarder.point_at(f"127.0.0.1:{content.port}")
    content.on_stop.append(forwarder.close)
    return LiveStack(
        data_dir=data_dir,
        db=db,
        vector=vector,
        content=content,
        content_channel=grpc.insecure_channel(f"127.0.0.1:{content.port}"),
        vector_channel=grpc.insecure_channel(f"127.0.0.1:{vector.port}"),
    )


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
    client = Clients(stack.content_channel, site.tenant.key)
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

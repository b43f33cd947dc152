"""What an operator sees, tested on the real parts: content_service delivering its outbox to
vector_service and an image worker, all in process on loopback port 0, each serving its
Prometheus endpoint on a port the OS picked (read back from the running server), and, for the
tracing tests, the OpenTelemetry SDK with its in-memory exporter."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from loom.content.v1 import images_pb2, indexing_pb2, indexing_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from content_service.db.engine import Database
from image_worker.worker import Worker
from servicekit import tracing
from tests.content.tenants_and_pages import Tenant, make_tenant
from tests.images.helpers import images_stub, upload
from tests.support import (
    ContentServer,
    CountingEmbedder,
    Scrape,
    Stub,
    VectorServer,
    content_settings,
    hash_embedder,
    scrape,
    start_content,
    vector_settings,
    wait_until,
    worker_settings,
)

Image = images_pb2.Image
_WORKER_NUMBERS = itertools.count(1)


class Spans:
    """The spans finished so far (the SDK's in-memory exporter)."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]

    def one(self, name: str, **attributes: Any) -> ReadableSpan:
        found = [
            s
            for s in self.named(name)
            if all((s.attributes or {}).get(k) == v for k, v in attributes.items())
        ]
        assert len(found) == 1, (name, attributes, [s.name for s in self.all()])
        return found[0]

    def wait_for(self, name: str, timeout: float = 30.0, **attributes: Any) -> ReadableSpan:
        wait_until(
            lambda: any(
                all((s.attributes or {}).get(k) == v for k, v in attributes.items())
                for s in self.named(name)
            ),
            timeout,
            f"a finished span {name} {attributes}",
        )
        return self.one(name, **attributes)

    def of_trace(self, trace_id: int) -> list[ReadableSpan]:
        return [s for s in self.all() if s.context is not None and s.context.trace_id == trace_id]


@pytest.fixture
def spans() -> Iterator[Spans]:
    """Tracing on, into memory, for servers and channels built after this fixture."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield Spans(exporter)
    finally:
        tracing.uninstall()
        provider.shutdown()


@dataclass
class Observed:
    db: Database
    tmp_path: Path
    vector: VectorServer
    content: ContentServer
    tenant: Tenant
    embedder: CountingEmbedder
    # Stops what was started, the last first (workers, then content, then vector).
    cleanup: ExitStack

    @property
    def images(self) -> Stub:
        return images_stub(self.tenant.client)

    def content_metrics(self) -> Scrape:
        return scrape(self.content.running.metrics_port)

    def vector_metrics(self) -> Scrape:
        assert self.vector.running is not None
        return scrape(self.vector.running.metrics_port)

    def drained(self, timeout: float = 30.0) -> None:
        indexing = self.content.admin.stub(indexing_pb2_grpc.IndexingServiceStub)
        wait_until(
            lambda: (
                indexing.GetIndexingStatus(indexing_pb2.GetIndexingStatusRequest()).pending_count
                == 0
            ),
            timeout,
            "the outbox to drain",
        )

    def start_worker(self, **overrides: Any) -> Worker:
        values: dict[str, Any] = {
            "name": f"observed-worker-{next(_WORKER_NUMBERS)}",
            "concurrency": 1,
            "widths": (64, 128),
            "claim_wait_seconds": 5.0,
            "grace_seconds": 5.0,
            "metrics_port": 0,
            **overrides,
        }
        worker = Worker(
            worker_settings(self.tmp_path, self.content.address, self.vector.address, **values)
        )
        worker.start()
        self.cleanup.callback(worker.stop, 0)
        return worker

    def upload(self, data: bytes, filename: str = "photo.png") -> images_pb2.Image:
        return upload(self.images, self.tenant.env_id, data, filename=filename)

    def wait_for(self, image_id: str, timeout: float = 30.0) -> images_pb2.Image:
        images = self.images

        def ended() -> images_pb2.Image | None:
            image: images_pb2.Image = images.GetImage(images_pb2.GetImageRequest(id=image_id))
            return image if image.state in (Image.STATE_COMPLETED, Image.STATE_FAILED) else None

        found: images_pb2.Image = wait_until(ended, timeout, f"image {image_id} to end")
        return found


ObservedFactory = Callable[..., Observed]


@pytest.fixture
def observe(migrated_db: Database, tmp_path: Path) -> Iterator[ObservedFactory]:
    """`observe(**content_overrides)`: vector_service, then content_service delivering its
    outbox to it, both serving metrics, and a tenant. Built when called, so a test's
    `spans` fixture (tracing on) comes first."""
    with ExitStack() as cleanup:

        def make(**content_overrides: Any) -> Observed:
            embedder = hash_embedder()
            vector = VectorServer(vector_settings(tmp_path / "vector", metrics_port=0), embedder)
            cleanup.callback(vector.close)
            settings = content_settings(
                tmp_path / "content",
                migrated_db.url,
                vector_address=vector.address,
                outbox_poll_seconds=0.05,
                outbox_backoff_cap_seconds=1.0,
                metrics_port=0,
                **content_overrides,
            )
            content = start_content(settings, migrated_db)
            cleanup.callback(content.stop)
            tenant = make_tenant(content.admin)
            return Observed(migrated_db, tmp_path, vector, content, tenant, embedder, cleanup)

        yield make

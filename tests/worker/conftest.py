"""Image worker test support: a real content_service (SQLite, migrated) and a real
vector_service (hash embedder, LanceDB in a temp folder), both in process on port 0, and
workers running in process against them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from loom.content.v1 import images_pb2, images_pb2_grpc
from loom.vector.v1 import vector_pb2

from image_worker.settings import WorkerSettings
from image_worker.worker import Worker
from tests.content.tenants_and_pages import Tenant, make_tenant
from tests.images.helpers import download, upload
from tests.support import (
    SERVICE_TOKEN,
    ContentServer,
    ContentServerFactory,
    Stub,
    VectorServer,
    hash_embedder,
    vector_settings,
    worker_settings,
)

Image = images_pb2.Image
TERMINAL = (Image.STATE_COMPLETED, Image.STATE_FAILED)


@pytest.fixture
def backend() -> str:
    """The worker talks to content_service over gRPC only: its relational backend is not
    what these tests are about, so they run it on SQLite."""
    return "sqlite"


@dataclass
class Stack:
    content: ContentServer
    vector: VectorServer
    tenant: Tenant
    tmp_path: Path
    workers: list[Worker] = field(default_factory=list)

    @property
    def images(self) -> Stub:
        return self.tenant.client.stub(images_pb2_grpc.ImageServiceStub)

    @property
    def jobs(self) -> Stub:
        return Stub(images_pb2_grpc.ImageJobServiceStub(self.content.channel), SERVICE_TOKEN)

    def worker_settings(self, **overrides: Any) -> WorkerSettings:
        values: dict[str, Any] = {
            "name": f"test-worker-{len(self.workers) + 1}",
            "concurrency": 2,
            # Small variants keep the tests fast; one test asks for the real widths.
            "widths": (64, 128),
            "claim_wait_seconds": 5.0,
            "retry_backoff_seconds": 0.1,
            "retry_backoff_max_seconds": 0.4,
            "grace_seconds": 5.0,
            **overrides,
        }
        return worker_settings(self.tmp_path, self.content.address, self.vector.address, **values)

    def start_worker(self, **overrides: Any) -> Worker:
        worker = Worker(self.worker_settings(**overrides))
        self.workers.append(worker)
        worker.start()
        return worker

    def upload(
        self,
        data: bytes,
        filename: str,
        mime_type: str = "",
        alt_text: str = "",
        environment_id: str | None = None,
    ) -> images_pb2.Image:
        return upload(
            self.images,
            environment_id or self.tenant.env_id,
            data,
            filename=filename,
            mime_type=mime_type,
            alt_text=alt_text,
            chunk=1024 * 1024,
        )

    def get(self, image_id: str) -> images_pb2.Image:
        result: images_pb2.Image = self.images.GetImage(images_pb2.GetImageRequest(id=image_id))
        return result

    def wait_for(
        self,
        image_id: str,
        states: tuple[int, ...] = TERMINAL,
        timeout: float = 30.0,
        condition: Callable[[images_pb2.Image], bool] | None = None,
    ) -> images_pb2.Image:
        end = time.monotonic() + timeout
        while True:
            image = self.get(image_id)
            if image.state in states and (condition is None or condition(image)):
                return image
            if time.monotonic() > end:
                raise AssertionError(
                    f"image {image_id} still {Image.State.Name(image.state)} after {timeout} s "
                    f"(attempts {image.attempts}, error {image.error!r})"
                )
            time.sleep(0.05)

    def download(self, image_id: str, variant: tuple[int, str] | None = None) -> bytes:
        return download(self.images, image_id, variant)[1]

    def search(
        self, text: str, mode: vector_pb2.SearchMode.ValueType = vector_pb2.SEARCH_MODE_FULL_TEXT
    ) -> list[vector_pb2.SearchResult]:
        response = self.vector.service.Search(
            vector_pb2.SearchRequest(
                collections=[vector_pb2.COLLECTION_IMAGES],
                scope=vector_pb2.Scope(
                    team_id=self.tenant.team_id,
                    site_id=self.tenant.site_id,
                    environment_id=self.tenant.env_id,
                ),
                query_text=text,
                mode=mode,
                limit=10,
            )
        )
        return list(response.results)


StackFactory = Callable[..., Stack]


@pytest.fixture
def stack_factory(content_servers: ContentServerFactory, tmp_path: Path) -> Iterator[StackFactory]:
    """`stack_factory(lease_seconds=2)`: the two services (content settings overridden) and
    a tenant. Workers started through the stack are stopped first at teardown."""
    made: list[Stack] = []

    def make(**content_overrides: Any) -> Stack:
        content = content_servers(tmp_path / "content", **content_overrides)
        # vector_service restarts (`stop`, `start`) on the same port and LanceDB folder.
        vector = VectorServer(
            vector_settings(tmp_path / "vector", content_address=content.address), hash_embedder()
        )
        stack = Stack(content, vector, make_tenant(content.admin), tmp_path)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        for worker in stack.workers:
            worker.stop(grace=0)
        stack.vector.close()


@pytest.fixture
def stack(stack_factory: StackFactory) -> Stack:
    return stack_factory()

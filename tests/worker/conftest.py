"""Image worker test support: a real content_service (SQLite, migrated) and a real
vector_service (hash embedder, LanceDB in a temp folder), both in process on port 0, and
workers running in process against them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from loom.content.v1 import images_pb2, images_pb2_grpc
from loom.vector.v1 import vector_pb2, vector_pb2_grpc

from content_service.db.engine import Database
from content_service.server import create_server as create_content_server
from image_worker.settings import WorkerSettings
from image_worker.worker import Worker
from servicekit.server import Running
from tests.conftest import ContentServer, content_settings
from tests.content.flows import Tenant, make_tenant
from tests.images.helpers import download, upload
from tests.support import SERVICE_TOKEN, Stub
from vector_service.server import create_server as create_vector_server
from vector_service.settings import VectorSettings

Image = images_pb2.Image
TERMINAL = (Image.STATE_COMPLETED, Image.STATE_FAILED)


@pytest.fixture
def backend() -> str:
    """The worker talks to content_service over gRPC only: its relational backend is not
    what these tests are about, so they run it on SQLite."""
    return "sqlite"


class VectorServer:
    """vector_service in process; `stop` and `start` again on the same port and LanceDB
    folder, as an operator would restart it."""

    def __init__(self, tmp_path: Path, content_address: str) -> None:
        self.settings = VectorSettings(
            data_dir=tmp_path,
            lancedb_uri=str(tmp_path / "lancedb"),
            embedder="hash",
            port=0,
            service_token=SERVICE_TOKEN,
            content_address=content_address,
        )
        self.running: Running | None = None
        self.port = 0
        self.start()
        self.channel = grpc.insecure_channel(self.address)
        self.stub = Stub(vector_pb2_grpc.VectorServiceStub(self.channel), SERVICE_TOKEN)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        settings = self.settings.model_copy(update={"port": self.port})
        self.running = create_vector_server(settings)
        self.running.server.start()
        self.port = self.running.port

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop(grace=0)
            self.running = None

    def close(self) -> None:
        self.channel.close()
        self.stop()


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
            "data_dir": self.tmp_path,
            "service_token": SERVICE_TOKEN,
            "content_address": self.content.address,
            "vector_address": self.vector.address,
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
        return WorkerSettings(**values)

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
        response = self.vector.stub.Search(
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
def stack_factory(migrated_db: Database, tmp_path: Path) -> Iterator[StackFactory]:
    """`stack_factory(lease_seconds=2)`: the two services (content settings overridden) and
    a tenant. Workers started through the stack are stopped first at teardown."""
    made: list[Stack] = []

    def make(**content_overrides: Any) -> Stack:
        settings = content_settings(tmp_path / "content", migrated_db.url, **content_overrides)
        running = create_content_server(settings, database=migrated_db)
        running.server.start()
        address = f"127.0.0.1:{running.port}"
        content = ContentServer(
            running, migrated_db, settings, address, grpc.insecure_channel(address)
        )
        vector = VectorServer(tmp_path / "vector", address)
        stack = Stack(content, vector, make_tenant(content.admin), tmp_path)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        for worker in stack.workers:
            worker.stop(grace=0)
        stack.vector.close()
        stack.content.channel.close()
        stack.content.running.stop(grace=1)


@pytest.fixture
def stack(stack_factory: StackFactory) -> Stack:
    return stack_factory()

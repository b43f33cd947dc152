"""A real content_service delivering its index outbox to a real vector_service (hash
embedder, counted), both on loopback, over a real SQLite file or PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from loom.content.v1 import indexing_pb2, indexing_pb2_grpc
from loom.vector.v1 import vector_pb2

from content_service.db.engine import Database
from content_service.server import create_server
from tests.conftest import ContentServer, content_settings
from tests.content.flows import Tenant, make_definition, make_tenant
from tests.support import Stub, wait_until
from tests.vector.conftest import (
    CountingEmbedder,
    VectorServer,
    hash_embedder,
    serve,
    vector_settings,
)

COLLECTION = {
    "pages": vector_pb2.COLLECTION_PAGES,
    "sections": vector_pb2.COLLECTION_SECTIONS,
    "posts": vector_pb2.COLLECTION_POSTS,
    "images": vector_pb2.COLLECTION_IMAGES,
}


@dataclass
class Stack:
    vector_dir: Path
    embedder: CountingEmbedder
    content: ContentServer = field(init=False)
    vector: VectorServer | None = None
    vector_port: int = 0
    _exits: ExitStack = field(default_factory=ExitStack)

    def start_vector(self) -> VectorServer:
        settings = vector_settings(self.vector_dir, port=self.vector_port)
        self.vector = self._exits.enter_context(serve(settings, self.embedder))
        self.vector_port = self.vector.running.port
        return self.vector

    def stop_vector(self) -> None:
        self._exits.close()
        self._exits = ExitStack()
        self.vector = None

    @property
    def indexing(self) -> Stub:
        return self.content.admin.stub(indexing_pb2_grpc.IndexingServiceStub)

    def status(self, team_id: str = "") -> indexing_pb2.IndexingStatus:
        return self.indexing.GetIndexingStatus(
            indexing_pb2.GetIndexingStatusRequest(team_id=team_id)
        )

    def drained(self, timeout: float = 30.0) -> None:
        wait_until(lambda: self.status().pending_count == 0, timeout, "the outbox to drain")

    def reconcile(self, t: Tenant, *, repair: bool = False) -> indexing_pb2.ReconcileIndexResponse:
        return self.indexing.ReconcileIndex(
            indexing_pb2.ReconcileIndexRequest(team_id=t.team_id, repair=repair)
        )

    def documents(self, t: Tenant, collection: str) -> dict[str, vector_pb2.Document]:
        assert self.vector is not None
        out: dict[str, vector_pb2.Document] = {}
        token = ""
        while True:
            page = self.vector.service.ListDocuments(
                vector_pb2.ListDocumentsRequest(
                    collection=COLLECTION[collection],
                    scope=vector_pb2.Scope(team_id=t.team_id),
                    page_token=token,
                )
            )
            out.update((d.id, d) for d in page.documents)
            token = page.next_page_token
            if not token:
                return out

    def search(self, t: Tenant, text: str, *collections: str, limit: int = 10) -> list[str]:
        assert self.vector is not None
        response = self.vector.service.Search(
            vector_pb2.SearchRequest(
                collections=[COLLECTION[c] for c in collections or COLLECTION],
                scope=vector_pb2.Scope(team_id=t.team_id),
                query_text=text,
                limit=limit,
            )
        )
        return [r.document.id for r in response.results]


def start_content(db: Database, data_dir: Path, vector_address: str) -> ContentServer:
    settings = content_settings(
        data_dir,
        db.url,
        vector_address=vector_address,
        outbox_poll_seconds=0.05,
        outbox_backoff_cap_seconds=1.0,
    )
    running = create_server(settings, database=db)
    running.server.start()
    address = f"127.0.0.1:{running.port}"
    return ContentServer(running, db, settings, address, grpc.insecure_channel(address))


@pytest.fixture
def stack(migrated_db: Database, tmp_path: Path) -> Iterator[Stack]:
    embedder = hash_embedder()
    s = Stack(vector_dir=tmp_path / "vector", embedder=embedder)
    vector = s.start_vector()
    s.content = start_content(migrated_db, tmp_path / "content", vector.address)
    try:
        yield s
    finally:
        s.content.channel.close()
        s.content.running.stop(grace=1)
        s.stop_vector()


@pytest.fixture
def tenant(stack: Stack) -> Tenant:
    return make_tenant(stack.content.admin, "acme")


@pytest.fixture
def definition_id(tenant: Tenant) -> str:
    return str(make_definition(tenant).id)

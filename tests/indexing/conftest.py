"""A real content_service delivering its index outbox to a real vector_service (hash
embedder, counted), both on loopback, over a real SQLite file or PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from loom.content.v1 import indexing_pb2, indexing_pb2_grpc
from loom.vector.v1 import vector_pb2

from content_service.db.engine import Database
from tests.content.tenants_and_pages import Tenant, make_definition, make_tenant
from tests.support import (
    ContentServer,
    CountingEmbedder,
    Stub,
    VectorServer,
    content_settings,
    hash_embedder,
    vector_settings,
    wait_until,
)
from tests.support import start_content as start_content_server

COLLECTION = {
    "pages": vector_pb2.COLLECTION_PAGES,
    "sections": vector_pb2.COLLECTION_SECTIONS,
    "posts": vector_pb2.COLLECTION_POSTS,
    "images": vector_pb2.COLLECTION_IMAGES,
}


@dataclass
class Stack:
    db: Database
    vector_dir: Path
    embedder: CountingEmbedder
    content: ContentServer = field(init=False)
    vector: VectorServer | None = None
    vector_port: int = 0

    def start_vector(self) -> VectorServer:
        settings = vector_settings(self.vector_dir, port=self.vector_port)
        self.vector = VectorServer(settings, self.embedder)
        self.vector_port = self.vector.port
        return self.vector

    def stop_vector(self) -> None:
        if self.vector is not None:
            self.vector.close(grace=5)
        self.vector = None

    def start_content(self, data_dir: Path) -> ContentServer:
        """content_service on the test's database, delivering its outbox to this stack's
        vector_service (the caller stops it)."""
        settings = content_settings(
            data_dir,
            self.db.url,
            vector_address=f"127.0.0.1:{self.vector_port}",
            outbox_poll_seconds=0.05,
            outbox_backoff_cap_seconds=1.0,
        )
        return start_content_server(settings, self.db)

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


@pytest.fixture
def stack(migrated_db: Database, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(db=migrated_db, vector_dir=tmp_path / "vector", embedder=hash_embedder())
    s.start_vector()
    s.content = s.start_content(tmp_path / "content")
    try:
        yield s
    finally:
        s.content.stop()
        s.stop_vector()


@pytest.fixture
def tenant(stack: Stack) -> Tenant:
    return make_tenant(stack.content.admin, "acme")


@pytest.fixture
def definition_id(tenant: Tenant) -> str:
    return str(make_definition(tenant).id)

"""vector_service test support: real servers on port 0 over real LanceDB directories.

The embedders are the real providers; tests that count model calls or need a slow model wrap
the real one (CountingEmbedder), they never replace it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import numpy as np
import pytest
from loom.vector.v1 import vector_pb2, vector_pb2_grpc
from numpy.typing import NDArray

from servicekit.server import Running
from tests.support import SERVICE_TOKEN, Stub
from vector_service.embeddings import Embedder, EmbedderConfig, create_embedder
from vector_service.server import create_server
from vector_service.settings import VectorSettings


@pytest.fixture
def backend() -> str:
    """The vector tests that need content_service (tenant keys) run it on SQLite only: the
    relational backend is not what they test."""
    return "sqlite"


class CountingEmbedder:
    """Wraps a real embedder, counting calls and texts; `delay` slows every call down (to
    watch a reindex while it runs)."""

    def __init__(self, inner: Embedder, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.calls = 0
        self.texts = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        with self._lock:
            self.calls += 1
            self.texts += len(texts)
        if self.delay:
            time.sleep(self.delay)
        return self.inner.embed(texts)


def hash_embedder(dimensions: int = 384, delay: float = 0.0) -> CountingEmbedder:
    return CountingEmbedder(
        create_embedder(EmbedderConfig(provider="hash", dimensions=dimensions)), delay
    )


def vector_settings(tmp_path: Path, **overrides: Any) -> VectorSettings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "lancedb_uri": str(tmp_path / "lancedb"),
        "embedder": "hash",
        "port": 0,
        "service_token": SERVICE_TOKEN,
        # Nothing listens there: a tenant key is UNAVAILABLE unless a test starts content.
        "content_address": "127.0.0.1:9",
        "content_timeout_seconds": 1.0,
        **overrides,
    }
    return VectorSettings(**values)


@dataclass
class VectorServer:
    running: Running
    settings: VectorSettings
    embedder: CountingEmbedder
    channel: grpc.Channel

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def stub(self, key: str | None = SERVICE_TOKEN) -> Any:
        return Stub(vector_pb2_grpc.VectorServiceStub(self.channel), key, timeout=60)

    @property
    def service(self) -> Any:
        return self.stub()


@contextmanager
def serve(settings: VectorSettings, embedder: CountingEmbedder) -> Iterator[VectorServer]:
    running = create_server(settings, embedder=embedder)
    running.server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield VectorServer(running, settings, embedder, channel)
    finally:
        channel.close()
        running.stop(grace=5)


@pytest.fixture
def vector_server(tmp_path: Path) -> Iterator[VectorServer]:
    with serve(vector_settings(tmp_path), hash_embedder()) as server:
        yield server


def doc(
    doc_id: str,
    text: str,
    *,
    team: str = "team-a",
    site: str = "site-1",
    env: str = "env-1",
    source: str = "",
) -> vector_pb2.Document:
    return vector_pb2.Document(
        id=doc_id,
        scope=vector_pb2.Scope(team_id=team, site_id=site, environment_id=env),
        source_id=source,
        text=text,
    )


Collection: TypeAlias = vector_pb2.Collection.ValueType
Mode: TypeAlias = vector_pb2.SearchMode.ValueType


def upsert(
    stub: Any,
    docs: Sequence[vector_pb2.Document],
    collection: Collection = vector_pb2.COLLECTION_PAGES,
) -> vector_pb2.UpsertDocumentsResponse:
    answer: vector_pb2.UpsertDocumentsResponse = stub.UpsertDocuments(
        vector_pb2.UpsertDocumentsRequest(collection=collection, documents=list(docs))
    )
    return answer


def search(
    stub: Any,
    text: str = "",
    *,
    team: str = "team-a",
    site: str = "",
    env: str = "",
    mode: Mode = vector_pb2.SEARCH_MODE_UNSPECIFIED,
    collections: Sequence[Collection] = (vector_pb2.COLLECTION_PAGES,),
    limit: int = 10,
    vector: Sequence[float] = (),
    vector_model: str = "",
) -> vector_pb2.SearchResponse:
    answer: vector_pb2.SearchResponse = stub.Search(
        vector_pb2.SearchRequest(
            collections=list(collections),
            scope=vector_pb2.Scope(team_id=team, site_id=site, environment_id=env),
            query_text=text,
            query_vector=list(vector),
            query_vector_model=vector_model,
            mode=mode,
            limit=limit,
        )
    )
    return answer


def ids(response: vector_pb2.SearchResponse) -> list[str]:
    return [r.document.id for r in response.results]


def stats(
    stub: Any, collection: Collection = vector_pb2.COLLECTION_PAGES
) -> vector_pb2.CollectionStats:
    answer: vector_pb2.GetCollectionStatsResponse = stub.GetCollectionStats(
        vector_pb2.GetCollectionStatsRequest(collection=collection)
    )
    return answer.stats

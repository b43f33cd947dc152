"""vector_service test support: real servers on port 0 over real LanceDB directories
(tests/support.py: VectorServer, serving_vector), and the calls the tests make of them.

The embedders are the real providers; tests that count model calls or need a slow model wrap
the real one (CountingEmbedder), they never replace it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from loom.vector.v1 import vector_pb2

from tests.support import VectorServer, hash_embedder, serving_vector, vector_settings


@pytest.fixture
def backend() -> str:
    """The vector tests that need content_service (tenant keys) run it on SQLite only: the
    relational backend is not what they test."""
    return "sqlite"


@pytest.fixture
def vector_server(tmp_path: Path) -> Iterator[VectorServer]:
    with serving_vector(vector_settings(tmp_path), hash_embedder()) as server:
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

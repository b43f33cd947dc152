"""VectorService over a real server and real LanceDB: embedding, idempotent upserts, deletes,
search modes, stats, optimize, maintenance, errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from loom.vector.v1 import vector_pb2

from tests.support import (
    CountingEmbedder,
    VectorServer,
    raises_status,
    serving_http,
    serving_vector,
    vector_settings,
)
from tests.vector.conftest import doc, ids, search, stats, upsert
from vector_service.embeddings import EmbedderConfig, create_embedder

PAGES = vector_pb2.COLLECTION_PAGES
SECTIONS = vector_pb2.COLLECTION_SECTIONS


def test_health_and_reflection(vector_server: VectorServer) -> None:
    health = health_pb2_grpc.HealthStub(vector_server.channel)
    for service in ["", "loom.vector.v1.VectorService"]:
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(vector_server.channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "loom.vector.v1.VectorService" in names


def test_embed_texts(vector_server: VectorServer) -> None:
    answer = vector_server.service.EmbedTexts(
        vector_pb2.EmbedTextsRequest(texts=["pricing plans", "about us"])
    )
    assert answer.model == "loom-hash-ngram-v1"
    assert answer.dimensions == 384
    vectors = np.array([e.values for e in answer.embeddings], dtype=np.float32)
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        vector_server.service.EmbedTexts(vector_pb2.EmbedTextsRequest(texts=["ok", " "]))
    assert err["fields"] == ["texts[1]"]


def test_upsert_is_idempotent_by_id_and_text_hash(vector_server: VectorServer) -> None:
    stub, counter = vector_server.service, vector_server.embedder
    docs = [doc(f"d{i}", f"text number {i}") for i in range(3)]
    first = upsert(stub, docs)
    assert (first.created_count, first.updated_count, first.unchanged_count) == (3, 0, 0)
    assert first.embedded_count == 3
    assert (first.model, first.dimensions) == ("loom-hash-ngram-v1", 384)
    assert counter.calls == 1
    version = stats(stub).table_version

    again = upsert(stub, docs)
    assert (again.created_count, again.updated_count, again.unchanged_count) == (0, 0, 3)
    assert again.embedded_count == 0
    assert counter.calls == 1, "same id + same text must not call the model"
    after = stats(stub)
    assert after.row_count == 3
    assert after.table_version == version, "an unchanged upsert must not write"

    changed = upsert(stub, [doc("d0", "a new text"), docs[1], docs[2]])
    assert (changed.created_count, changed.updated_count, changed.unchanged_count) == (0, 1, 2)
    assert changed.embedded_count == 1
    assert counter.calls == 2
    assert counter.texts == 4

    moved = upsert(stub, [doc("d1", "text number 1", env="env-2", source="page-9")])
    assert (moved.updated_count, moved.embedded_count) == (1, 0)
    assert counter.calls == 2, "a new scope with the same text reuses the stored vector"
    assert stats(stub).row_count == 3
    found = search(stub, "text number 1", env="env-2", mode=vector_pb2.SEARCH_MODE_VECTOR)
    assert ids(found)[0] == "d1"
    assert found.results[0].document.source_id == "page-9"
    assert found.results[0].vector_distance == pytest.approx(0, abs=1e-5)

    # Identical texts in one batch are embedded once.
    twins = upsert(stub, [doc("t1", "same words"), doc("t2", "same words")])
    assert (twins.created_count, twins.embedded_count) == (2, 1)


def test_upsert_validation(vector_server: VectorServer) -> None:
    stub = vector_server.service
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        upsert(stub, [doc("x", "one"), doc("x", "two"), doc("bad'id", "three")])
    assert err["fields"] == ["documents[1].id", "documents[2].id"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        upsert(stub, [doc("y", "text", env="")])
    assert err["fields"] == ["documents[0].scope.environment_id"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        upsert(stub, [doc("y", "text")], collection=vector_pb2.COLLECTION_UNSPECIFIED)
    assert err["fields"] == ["collection"]
    assert vector_server.embedder.calls == 0


def test_delete_by_ids_and_by_source_within_scope(vector_server: VectorServer) -> None:
    stub = vector_server.service
    upsert(
        stub,
        [
            doc("p1-a", "alpha", source="p1"),
            doc("p1-b", "beta", source="p1"),
            doc("p2-a", "gamma", source="p2"),
            doc("other", "delta", team="team-b", source="p1"),
        ],
    )

    def delete(**kwargs: object) -> int:
        request = vector_pb2.DeleteDocumentsRequest(collection=PAGES, **kwargs)  # type: ignore[arg-type]
        return int(stub.DeleteDocuments(request).deleted_count)

    team_a = vector_pb2.Scope(team_id="team-a")
    assert delete(scope=team_a, source_id="p1") == 2
    assert delete(scope=team_a, ids=["other"]) == 0, "another team's row is out of scope"
    assert delete(scope=vector_pb2.Scope(team_id="team-a", site_id="site-9"), ids=["p2-a"]) == 0
    assert delete(scope=team_a, ids=["p2-a", "missing"]) == 1
    assert stats(stub).row_count == 1
    assert ids(search(stub, "delta", team="team-b", mode=vector_pb2.SEARCH_MODE_FULL_TEXT)) == [
        "other"
    ]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        delete(scope=team_a, ids=["x"], source_id="p1")
    assert err["fields"] == ["ids"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        delete(ids=["x"])
    assert err["fields"] == ["scope.team_id"]


def test_search_modes(vector_server: VectorServer) -> None:
    stub = vector_server.service
    upsert(
        stub,
        [
            doc("pricing", "pricing plans and monthly cost for every team"),
            doc("about", "about our company and the people behind it"),
            doc("blog", "a blog post about gardening in spring"),
        ],
    )
    upsert(stub, [doc("sec-price", "the pricing table section")], collection=SECTIONS)

    vector = search(stub, "monthly pricing plans", mode=vector_pb2.SEARCH_MODE_VECTOR)
    assert vector.mode == vector_pb2.SEARCH_MODE_VECTOR
    assert ids(vector)[0] == "pricing"
    assert all(
        r.HasField("vector_distance") and not r.HasField("text_score") for r in vector.results
    )

    text = search(stub, "gardening", mode=vector_pb2.SEARCH_MODE_FULL_TEXT)
    assert ids(text) == ["blog"]
    assert text.results[0].text_score > 0

    hybrid = search(stub, "pricing", collections=[PAGES, SECTIONS])
    assert hybrid.mode == vector_pb2.SEARCH_MODE_HYBRID
    top = {(r.collection, r.document.id) for r in hybrid.results[:2]}
    assert top == {(PAGES, "pricing"), (SECTIONS, "sec-price")}
    both = hybrid.results[0]
    assert both.HasField("vector_distance")
    assert both.HasField("text_score")
    assert both.score == pytest.approx(2 / 61)
    assert [r.score for r in hybrid.results] == sorted(
        (r.score for r in hybrid.results), reverse=True
    )

    # A query vector from EmbedTexts, with its model.
    embedded = stub.EmbedTexts(vector_pb2.EmbedTextsRequest(texts=["people behind the company"]))
    by_vector = search(stub, vector=embedded.embeddings[0].values, vector_model=embedded.model)
    assert by_vector.mode == vector_pb2.SEARCH_MODE_VECTOR
    assert ids(by_vector)[0] == "about"
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION) as err:
        search(stub, vector=[0.5] * 8)
    assert err["reason"] == "DIMENSION_MISMATCH"
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION) as err:
        search(stub, vector=embedded.embeddings[0].values, vector_model="text-embedding-3-small")
    assert err["reason"] == "MODEL_MISMATCH"

    assert len(search(stub, "pricing", limit=1).results) == 1
    assert search(stub, "pricing", collections=[vector_pb2.COLLECTION_POSTS]).results == []
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        search(stub, "", mode=vector_pb2.SEARCH_MODE_HYBRID, limit=500, collections=[])
    assert set(err["fields"]) == {"collections", "query_text", "limit"}
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        search(stub, "pricing", team="")
    assert err["fields"] == ["scope.team_id"]


def test_full_text_and_hybrid_see_new_rows_at_once(vector_server: VectorServer) -> None:
    stub = vector_server.service
    upsert(stub, [doc(f"old{i}", f"ordinary page {i}") for i in range(5)])
    stub.Optimize(vector_pb2.OptimizeRequest())
    text_index = next(i for i in stats(stub).indexes if list(i.columns) == ["text"])
    assert text_index.index_type == "FTS"
    assert text_index.unindexed_rows == 0

    upsert(stub, [doc("new", "zeppelin ride tickets")])
    before = next(i for i in stats(stub).indexes if list(i.columns) == ["text"])
    assert before.unindexed_rows == 1
    for mode in (vector_pb2.SEARCH_MODE_FULL_TEXT, vector_pb2.SEARCH_MODE_HYBRID):
        assert ids(search(stub, "zeppelin", mode=mode))[0] == "new"
    # The full-text search refreshed the index lazily, since the table had changed.
    after = next(i for i in stats(stub).indexes if list(i.columns) == ["text"])
    assert after.unindexed_rows == 0


def test_stats_and_optimize_compact_fragments(vector_server: VectorServer) -> None:
    stub = vector_server.service
    empty = stats(stub)
    assert not empty.exists
    assert empty.row_count == 0
    assert empty.configured_model == "loom-hash-ngram-v1"
    assert empty.model_matches
    for i in range(12):
        upsert(stub, [doc(f"d{i}", f"small append {i}")])
    before = stats(stub)
    assert before.exists
    assert before.row_count == 12
    assert before.table_name == "page_embeddings"
    assert (before.model, before.dimensions) == ("loom-hash-ngram-v1", 384)
    assert before.fragment_count >= 12
    assert before.vector_index_state == vector_pb2.VECTOR_INDEX_STATE_NOT_NEEDED
    assert {tuple(i.columns) for i in before.indexes} >= {
        ("id",),
        ("team_id",),
        ("site_id",),
        ("environment_id",),
        ("text",),
    }
    optimized = stub.Optimize(vector_pb2.OptimizeRequest(collections=[PAGES]))
    (after,) = optimized.collections
    assert after.fragment_count == 1
    assert after.row_count == 12
    assert all(i.unindexed_rows == 0 for i in after.indexes)
    assert after.table_version > before.table_version


def test_background_maintenance_compacts(tmp_path: Path) -> None:
    settings = vector_settings(tmp_path, maintenance_writes=5, maintenance_seconds=60)
    embedder = CountingEmbedder(create_embedder(EmbedderConfig(provider="hash")))
    with serving_vector(settings, embedder) as server:
        stub = server.service
        for i in range(6):
            upsert(stub, [doc(f"d{i}", f"append {i}")])
        deadline = time.monotonic() + 20
        while stats(stub).fragment_count > 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stats(stub).fragment_count <= 2


def test_callers_need_a_key(vector_server: VectorServer) -> None:
    with raises_status(grpc.StatusCode.UNAUTHENTICATED):
        search(vector_server.stub(None), "pricing")
    # A key that is not the service token is a tenant key: content_service resolves those,
    # and nothing listens at its address here.
    with raises_status(grpc.StatusCode.UNAVAILABLE) as err:
        search(vector_server.stub("some-tenant-key"), "pricing")
    assert err["reason"] == "AUTH_UNAVAILABLE"


class _FakeOpenAI(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that fails as told: the provider under test is real."""

    status = 503

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        body = json.dumps({"error": {"message": "nope", "type": "test", "code": "test"}})
        self.send_response(self.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_openai() -> Iterator[ThreadingHTTPServer]:
    with serving_http(_FakeOpenAI) as server:
        yield server


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (503, grpc.StatusCode.UNAVAILABLE, "EMBEDDING_UNAVAILABLE"),
        (400, grpc.StatusCode.FAILED_PRECONDITION, "EMBEDDING_FAILED"),
    ],
)
def test_embedding_failures_map_to_statuses_and_store_nothing(
    tmp_path: Path,
    fake_openai: ThreadingHTTPServer,
    status: int,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    _FakeOpenAI.status = status
    port = fake_openai.server_address[1]
    provider = create_embedder(
        EmbedderConfig(
            provider="openai",
            base_url=f"http://127.0.0.1:{port}/v1",
            model="test-model",
            dimensions=8,
            max_retries=0,
        )
    )
    try:
        with serving_vector(vector_settings(tmp_path), CountingEmbedder(provider)) as server:
            stub = server.service
            with raises_status(code) as err:
                upsert(stub, [doc("d1", "some text")])
            assert err["reason"] == reason
            assert "some text" not in err["message"]
            with raises_status(code):
                stub.EmbedTexts(vector_pb2.EmbedTextsRequest(texts=["hello"]))
            assert stats(stub).row_count == 0
    finally:
        provider.close()  # type: ignore[attr-defined]

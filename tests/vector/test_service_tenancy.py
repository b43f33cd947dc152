"""Tenant isolation and tenant API keys: a search never ranks another team's rows, in any mode,
and a tenant key (resolved by a real content_service) may only embed and search its own team."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from loom.content.v1 import tenancy_pb2
from loom.vector.v1 import vector_pb2

from tests.content.tenants_and_pages import make_tenant
from tests.support import (
    ContentServer,
    VectorServer,
    hash_embedder,
    raises_status,
    serving_vector,
    vector_settings,
)
from tests.vector.conftest import doc, ids, search, upsert

MODES = [
    vector_pb2.SEARCH_MODE_VECTOR,
    vector_pb2.SEARCH_MODE_FULL_TEXT,
    vector_pb2.SEARCH_MODE_HYBRID,
]
QUERY = "pricing plans for small teams"


def _fill_two_teams(server: VectorServer) -> None:
    stub = server.service
    # Team B holds the query itself, many times: the nearest vectors and the best BM25
    # matches. Team A holds fewer, weaker matches.
    upsert(stub, [doc(f"b{i}", f"{QUERY} {i}", team="team-b") for i in range(300)])
    upsert(stub, [doc(f"a{i}", f"plans {i} for teams", team="team-a") for i in range(5)])
    upsert(stub, [doc("a-exact", QUERY + "!", team="team-a", site="site-2")])


@pytest.mark.parametrize("indexed", [False, True], ids=["exact", "ann-index"])
def test_search_never_returns_another_teams_rows(tmp_path: Path, indexed: bool) -> None:
    threshold = 100 if indexed else 1_000_000
    settings = vector_settings(tmp_path, index_threshold_rows=threshold, index_partition_rows=32)
    with serving_vector(settings, hash_embedder()) as server:
        _fill_two_teams(server)
        stub = server.service
        stub.Optimize(vector_pb2.OptimizeRequest())
        state = next(
            s.vector_index_state for s in stub.Optimize(vector_pb2.OptimizeRequest()).collections
        )
        expected = (
            vector_pb2.VECTOR_INDEX_STATE_READY
            if indexed
            else vector_pb2.VECTOR_INDEX_STATE_NOT_NEEDED
        )
        assert state == expected
        query_vector = stub.EmbedTexts(vector_pb2.EmbedTextsRequest(texts=[QUERY]))
        for mode in MODES:
            found = search(stub, QUERY, team="team-a", mode=mode, limit=20)
            assert found.results, mode
            assert {r.document.scope.team_id for r in found.results} == {"team-a"}, mode
            if mode != vector_pb2.SEARCH_MODE_FULL_TEXT:
                assert ids(found)[0] == "a-exact"
                assert len(found.results) == 6
            narrowed = search(stub, QUERY, team="team-a", site="site-2", mode=mode)
            assert ids(narrowed) == ["a-exact"]
            other = search(stub, QUERY, team="team-b", mode=mode, limit=20)
            assert {r.document.scope.team_id for r in other.results} == {"team-b"}
        by_vector = search(stub, team="team-a", vector=query_vector.embeddings[0].values)
        assert {r.document.scope.team_id for r in by_vector.results} == {"team-a"}
        assert search(stub, QUERY, team="team-c").results == []


@pytest.fixture
def vector_with_content(tmp_path: Path, content_server: ContentServer) -> Iterator[VectorServer]:
    settings = vector_settings(
        tmp_path / "vector",
        content_address=content_server.address,
        auth_cache_seconds=30,
        auth_negative_cache_seconds=0.5,
    )
    with serving_vector(settings, hash_embedder()) as server:
        yield server


def test_tenant_key_may_search_and_embed_only_its_own_team(
    vector_with_content: VectorServer, content_server: ContentServer
) -> None:
    acme = make_tenant(content_server.admin, "acme")
    globex = make_tenant(content_server.admin, "globex")
    service = vector_with_content.service
    upsert(service, [doc("acme-1", QUERY, team=acme.team_id, site=acme.site_id, env=acme.env_id)])
    upsert(service, [doc("globex-1", QUERY, team=globex.team_id, site=globex.site_id)])

    tenant = vector_with_content.stub(acme.key)
    for mode in MODES:
        # No team named: the key's own team.
        found = search(tenant, QUERY, team="", mode=mode)
        assert ids(found) == ["acme-1"]
        assert search(tenant, QUERY, team=acme.team_id, mode=mode).results
        with raises_status(grpc.StatusCode.PERMISSION_DENIED):
            search(tenant, QUERY, team=globex.team_id, mode=mode)
    embedded = tenant.EmbedTexts(vector_pb2.EmbedTextsRequest(texts=["hello"]))
    assert embedded.dimensions == 384

    for call, request in [
        (
            "UpsertDocuments",
            vector_pb2.UpsertDocumentsRequest(
                collection=vector_pb2.COLLECTION_PAGES, documents=[doc("x", "y", team=acme.team_id)]
            ),
        ),
        (
            "DeleteDocuments",
            vector_pb2.DeleteDocumentsRequest(
                collection=vector_pb2.COLLECTION_PAGES,
                scope=vector_pb2.Scope(team_id=acme.team_id),
                ids=["acme-1"],
            ),
        ),
        (
            "GetCollectionStats",
            vector_pb2.GetCollectionStatsRequest(collection=vector_pb2.COLLECTION_PAGES),
        ),
        (
            "ListDocuments",
            vector_pb2.ListDocumentsRequest(
                collection=vector_pb2.COLLECTION_PAGES, scope=vector_pb2.Scope(team_id=acme.team_id)
            ),
        ),
        ("Optimize", vector_pb2.OptimizeRequest()),
        ("Reindex", vector_pb2.ReindexRequest(collection=vector_pb2.COLLECTION_PAGES)),
    ]:
        with raises_status(grpc.StatusCode.PERMISSION_DENIED):
            getattr(tenant, call)(request)

    with raises_status(grpc.StatusCode.UNAUTHENTICATED):
        search(vector_with_content.stub("not-a-key"), QUERY)
    # The admin key is content_service's own; vector_service does not know it.
    with raises_status(grpc.StatusCode.UNAUTHENTICATED):
        search(vector_with_content.stub(content_server.admin.key), QUERY, team=acme.team_id)


def test_key_answers_are_cached_and_content_down_is_unavailable(
    vector_with_content: VectorServer, content_server: ContentServer
) -> None:
    acme = make_tenant(content_server.admin, "acme")
    fresh = content_server.admin.tenancy.CreateApiKey(
        tenancy_pb2.CreateApiKeyRequest(team_id=acme.team_id, name="later")
    )
    tenant = vector_with_content.stub(acme.key)
    assert search(tenant, QUERY, team="").results == []  # resolved, and cached for 30 s

    content_server.running.stop(grace=0)
    assert search(tenant, QUERY, team="").results == [], "a cached key works while content is down"
    with raises_status(grpc.StatusCode.UNAVAILABLE) as err:
        search(vector_with_content.stub(fresh.secret), QUERY, team="")
    assert "content_service" in err["message"]


def test_unknown_keys_are_cached_briefly(
    vector_with_content: VectorServer, content_server: ContentServer
) -> None:
    stranger = vector_with_content.stub("not-a-key")
    with raises_status(grpc.StatusCode.UNAUTHENTICATED):
        search(stranger, QUERY, team="team-a")
    content_server.running.stop(grace=0)
    # Within the negative TTL (0.5 s here) the answer comes from the cache...
    with raises_status(grpc.StatusCode.UNAUTHENTICATED):
        search(stranger, QUERY, team="team-a")
    time.sleep(0.6)
    # ...then content_service is asked again, and it is down.
    with raises_status(grpc.StatusCode.UNAVAILABLE):
        search(stranger, QUERY, team="team-a")

"""ListDocuments (what reconcile compares) and DeleteDocuments of a whole environment."""

from __future__ import annotations

import grpc
from loom.vector.v1 import vector_pb2

from tests.support import VectorServer, raises_status
from tests.vector.conftest import doc

PAGES = vector_pb2.COLLECTION_PAGES


def _upsert(server: VectorServer, *docs: vector_pb2.Document) -> None:
    server.service.UpsertDocuments(
        vector_pb2.UpsertDocumentsRequest(collection=PAGES, documents=list(docs))
    )


def test_list_pages_in_id_order_within_the_scope_without_text(
    vector_server: VectorServer,
) -> None:
    _upsert(
        vector_server,
        *[doc(f"d{i}", f"text {i}", source=f"s{i % 2}") for i in (4, 1, 3, 0, 2)],
        doc("other", "elsewhere", team="team-b"),
    )
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = vector_server.service.ListDocuments(
            vector_pb2.ListDocumentsRequest(
                collection=PAGES,
                scope=vector_pb2.Scope(team_id="team-a"),
                page_size=2,
                page_token=token,
            )
        )
        pages += 1
        seen += [d.id for d in page.documents]
        assert all(d.text == "" and len(d.text_sha256) == 64 for d in page.documents)
        token = page.next_page_token
        if not token:
            break
    assert (seen, pages) == (["d0", "d1", "d2", "d3", "d4"], 3)

    by_source = vector_server.service.ListDocuments(
        vector_pb2.ListDocumentsRequest(
            collection=PAGES, scope=vector_pb2.Scope(team_id="team-a"), source_id="s1"
        )
    )
    assert [d.id for d in by_source.documents] == ["d1", "d3"]
    # A token is bound to its filters.
    first = vector_server.service.ListDocuments(
        vector_pb2.ListDocumentsRequest(
            collection=PAGES, scope=vector_pb2.Scope(team_id="team-a"), page_size=1
        )
    )
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as box:
        vector_server.service.ListDocuments(
            vector_pb2.ListDocumentsRequest(
                collection=PAGES,
                scope=vector_pb2.Scope(team_id="team-b"),
                page_token=first.next_page_token,
            )
        )
    assert box["fields"] == ["page_token"]


def test_delete_all_in_scope_takes_one_environment_only(vector_server: VectorServer) -> None:
    _upsert(vector_server, doc("a", "one", env="env-1"), doc("b", "two", env="env-2"))
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as box:
        vector_server.service.DeleteDocuments(
            vector_pb2.DeleteDocumentsRequest(
                collection=PAGES, scope=vector_pb2.Scope(team_id="team-a"), all_in_scope=True
            )
        )
    assert box["fields"] == ["scope.environment_id"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT):
        vector_server.service.DeleteDocuments(
            vector_pb2.DeleteDocumentsRequest(
                collection=PAGES,
                scope=vector_pb2.Scope(team_id="team-a", environment_id="env-1"),
                ids=["a"],
                all_in_scope=True,
            )
        )
    deleted = vector_server.service.DeleteDocuments(
        vector_pb2.DeleteDocumentsRequest(
            collection=PAGES,
            scope=vector_pb2.Scope(team_id="team-a", site_id="site-1", environment_id="env-1"),
            all_in_scope=True,
        )
    )
    assert deleted.deleted_count == 1
    left = vector_server.service.ListDocuments(
        vector_pb2.ListDocumentsRequest(collection=PAGES, scope=vector_pb2.Scope(team_id="team-a"))
    )
    assert [d.id for d in left.documents] == ["b"]

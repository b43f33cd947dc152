"""Delivery when things go wrong: vector_service down or restarted, drift repaired by
reconcile, and one dispatcher among several content_service processes."""

from __future__ import annotations

from pathlib import Path

from loom.content.v1 import indexing_pb2, indexing_pb2_grpc, pages_pb2
from loom.vector.v1 import vector_pb2

from tests.content.service_stubs import make_post
from tests.content.tenants_and_pages import Tenant, make_page
from tests.indexing.conftest import Stack
from tests.support import wait_until


def test_writes_succeed_while_vector_service_is_down_and_the_index_catches_up(
    stack: Stack, tenant: Tenant, definition_id: str
) -> None:
    stack.stop_vector()
    pages = [make_page(tenant, definition_id, f"p{i}", n_sections=1) for i in range(12)]
    make_post(tenant, "while-down")

    status = wait_until(lambda: (s := stack.status()).failing_count and s, what="a failed try")
    assert status.pending_count >= 13
    assert status.oldest_pending_time.seconds > 0
    assert "UNAVAILABLE" in status.last_error

    stack.start_vector()  # same port, same LanceDB directory
    stack.drained(timeout=60)
    assert sorted(stack.documents(tenant, "pages")) == sorted(p.id for p in pages)
    report = stack.reconcile(tenant)
    assert report.drift_count == 0, report
    status = stack.status()
    assert (status.pending_count, status.failing_count, status.last_error) == (0, 0, "")


def test_reconcile_finds_missing_orphaned_and_stale_documents_and_repairs_them(
    stack: Stack, tenant: Tenant, definition_id: str
) -> None:
    page = make_page(tenant, definition_id, "home", n_sections=2)
    other = make_page(tenant, definition_id, "other", n_sections=1)
    stack.drained()
    assert stack.vector is not None
    service = stack.vector.service
    scope = vector_pb2.Scope(
        team_id=tenant.team_id, site_id=tenant.site_id, environment_id=tenant.env_id
    )
    # Drift made behind content_service's back: a lost page document, a document no content
    # is behind, a section document with old text.
    service.DeleteDocuments(
        vector_pb2.DeleteDocumentsRequest(
            collection=vector_pb2.COLLECTION_PAGES, scope=scope, ids=[other.id]
        )
    )
    service.UpsertDocuments(
        vector_pb2.UpsertDocumentsRequest(
            collection=vector_pb2.COLLECTION_POSTS,
            documents=[vector_pb2.Document(id="ghost", scope=scope, source_id="ghost", text="x")],
        )
    )
    service.UpsertDocuments(
        vector_pb2.UpsertDocumentsRequest(
            collection=vector_pb2.COLLECTION_SECTIONS,
            documents=[
                vector_pb2.Document(
                    id=page.sections[0].id, scope=scope, source_id=page.id, text="old words"
                )
            ],
        )
    )

    report = stack.reconcile(tenant, repair=True)
    by_name = {c.collection: c for c in report.collections}
    assert [c.collection for c in report.collections] == ["pages", "sections", "posts", "images"]
    assert (by_name["pages"].missing_count, list(by_name["pages"].sample_ids)) == (1, [other.id])
    assert (by_name["posts"].orphaned_count, list(by_name["posts"].sample_ids)) == (1, ["ghost"])
    assert by_name["sections"].stale_count == 1
    assert report.drift_count == 3
    assert report.queued_count == 3

    stack.drained()
    assert stack.reconcile(tenant).drift_count == 0
    assert stack.search(tenant, "Page other", "pages")[0] == other.id


def test_only_one_content_service_delivers(
    stack: Stack, tenant: Tenant, definition_id: str, tmp_path: Path
) -> None:
    assert stack.vector is not None
    second = stack.start_content(tmp_path / "second")
    second_indexing = second.admin.stub(indexing_pb2_grpc.IndexingServiceStub)
    ask = indexing_pb2.GetIndexingStatusRequest()
    try:
        wait_until(lambda: stack.status().delivering, what="the first dispatcher")
        assert not second_indexing.GetIndexingStatus(ask).delivering

        # The first one stops: the second takes over without waiting for any timeout.
        stack.content.running.stop(grace=1)
        page = second.client(tenant.key).pages.CreatePage(
            pages_pb2.CreatePageRequest(
                environment_id=tenant.env_id,
                page=pages_pb2.Page(slug="late", title="Late page"),
            )
        )
        wait_until(lambda: second_indexing.GetIndexingStatus(ask).delivering, what="takeover")
        wait_until(lambda: page.id in stack.documents(tenant, "pages"), what="the delivery")
    finally:
        second.stop()

"""Content changes reach vector_service through the outbox: what is embedded, what is not
embedded again, deletes, and the transaction the rows are written in."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from loom.content.v1 import (
    clone_pb2,
    indexing_pb2,
    indexing_pb2_grpc,
    pages_pb2,
    posts_pb2,
    tenancy_pb2,
)
from sqlalchemy import func, select

from content_service.db.models import IndexOutbox
from tests.content.service_stubs import clone_stub, make_post, posts
from tests.content.tenants_and_pages import Tenant, make_page, make_tenant, struct
from tests.indexing.conftest import Stack
from tests.support import raises_status


def outbox_rows(stack: Stack) -> int:
    with stack.content.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(IndexOutbox)) or 0)


def test_pages_sections_and_posts_are_embedded_and_found_by_meaning(
    stack: Stack, tenant: Tenant, definition_id: str
) -> None:
    page = make_page(tenant, definition_id, "pricing", n_sections=2)
    post = make_post(tenant, "launch", title="We launched", excerpt="Short", body="Long body")
    stack.drained()

    pages = stack.documents(tenant, "pages")
    sections = stack.documents(tenant, "sections")
    found_posts = stack.documents(tenant, "posts")
    assert list(pages) == [page.id]
    assert pages[page.id].source_id == page.id
    assert sorted(sections) == sorted(s.id for s in page.sections)
    assert {d.source_id for d in sections.values()} == {page.id}
    assert list(found_posts) == [post.id]
    scope = pages[page.id].scope
    assert (scope.team_id, scope.site_id, scope.environment_id) == (
        tenant.team_id,
        tenant.site_id,
        tenant.env_id,
    )
    # The texts: page title + section texts; each section alone; post title, excerpt, body.
    assert stack.search(tenant, "Page pricing", "pages")[0] == page.id
    assert stack.search(tenant, "We launched", "posts") == [post.id]
    assert stack.reconcile(tenant).drift_count == 0
    assert outbox_rows(stack) == 0


def test_saving_unchanged_content_costs_no_model_call(
    stack: Stack, tenant: Tenant, definition_id: str
) -> None:
    page = make_page(tenant, definition_id, "about", n_sections=3)
    stack.drained()
    texts_before = stack.embedder.texts

    tenant.client.pages.UpdatePage(
        pages_pb2.UpdatePageRequest(
            page=pages_pb2.Page(id=page.id, title=page.title),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        )
    )
    stack.drained()
    assert stack.status().delivered_count >= 2  # the save was delivered...
    assert stack.embedder.texts == texts_before  # ...and cost no embedding

    # One section's text changes: that section and the page (whose text includes it) only.
    tenant.client.pages.UpdateSection(
        pages_pb2.UpdateSectionRequest(
            page_id=page.id,
            section_id=page.sections[1].id,
            content=struct({"title": "Completely new words"}),
        )
    )
    stack.drained()
    assert stack.embedder.texts == texts_before + 2


def test_deletes_remove_their_documents_and_nothing_else(
    stack: Stack, tenant: Tenant, definition_id: str
) -> None:
    keep = make_page(tenant, definition_id, "keep", n_sections=2)
    gone = make_page(tenant, definition_id, "gone", n_sections=2)
    post = make_post(tenant, "bye")
    stack.drained()

    tenant.client.pages.RemoveSection(
        pages_pb2.RemoveSectionRequest(page_id=keep.id, section_id=keep.sections[0].id)
    )
    tenant.client.pages.DeletePage(pages_pb2.DeletePageRequest(id=gone.id))
    posts(tenant).DeletePost(posts_pb2.DeletePostRequest(id=post.id))
    stack.drained()

    assert list(stack.documents(tenant, "pages")) == [keep.id]
    assert list(stack.documents(tenant, "sections")) == [keep.sections[1].id]
    assert stack.documents(tenant, "posts") == {}
    assert stack.reconcile(tenant).drift_count == 0


def test_deleting_an_environment_removes_all_of_its_documents(
    stack: Stack, tenant: Tenant, definition_id: str
) -> None:
    make_page(tenant, definition_id, "home")
    stack.drained()
    texts = stack.embedder.texts
    clone = clone_stub(tenant).CloneEnvironment(
        clone_pb2.CloneEnvironmentRequest(source_environment_id=tenant.env_id, name="staging")
    )
    stack.drained()
    envs = {d.scope.environment_id for d in stack.documents(tenant, "pages").values()}
    assert envs == {tenant.env_id, clone.environment.id}  # the clone is embedded too...
    assert stack.embedder.texts == texts  # ...with the vectors its texts already had

    tenant.client.tenancy.DeleteEnvironment(
        tenancy_pb2.DeleteEnvironmentRequest(id=clone.environment.id)
    )
    stack.drained()
    for collection in ("pages", "sections"):
        envs = {d.scope.environment_id for d in stack.documents(tenant, collection).values()}
        assert envs == {tenant.env_id}
    assert stack.reconcile(tenant).drift_count == 0


def test_a_failed_write_leaves_no_outbox_row(
    stack: Stack, tenant: Tenant, definition_id: str
) -> None:
    make_page(tenant, definition_id, "home")
    stack.drained()
    with raises_status(grpc.StatusCode.ALREADY_EXISTS):
        make_page(tenant, definition_id, "home")
    assert outbox_rows(stack) == 0


def test_status_and_reconcile_stay_inside_the_callers_team(
    stack: Stack, tenant: Tenant, definition_id: str
) -> None:
    other = make_tenant(stack.content.admin, "other")
    own = other.client.stub(indexing_pb2_grpc.IndexingServiceStub)
    with raises_status(grpc.StatusCode.PERMISSION_DENIED):
        own.GetIndexingStatus(indexing_pb2.GetIndexingStatusRequest(team_id=tenant.team_id))
    with raises_status(grpc.StatusCode.PERMISSION_DENIED):
        own.ReconcileIndex(indexing_pb2.ReconcileIndexRequest(team_id=tenant.team_id))
    make_page(tenant, definition_id, "secret")
    stack.drained()
    report = own.ReconcileIndex(indexing_pb2.ReconcileIndexRequest())
    assert [c.expected_count for c in report.collections] == [0, 0, 0, 0]
    assert [c.indexed_count for c in report.collections] == [0, 0, 0, 0]
    assert stack.search(other, "Page secret") == []


@pytest.mark.parametrize("environment_only", [True, False])
def test_reconcile_validates_its_scope(
    stack: Stack, tenant: Tenant, environment_only: bool
) -> None:
    request = (
        indexing_pb2.ReconcileIndexRequest(team_id=tenant.team_id, environment_id=tenant.env_id)
        if environment_only
        else indexing_pb2.ReconcileIndexRequest(team_id="nope", site_id=tenant.site_id)
    )
    code = grpc.StatusCode.INVALID_ARGUMENT if environment_only else grpc.StatusCode.NOT_FOUND
    with raises_status(code) as box:
        stack.indexing.ReconcileIndex(request)
    if environment_only:
        assert box["fields"] == ["site_id"]

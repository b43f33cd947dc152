from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from loom.content.v1 import common_pb2, pages_pb2

from tests.content.tenants_and_pages import make_definition, make_page, make_tenant, struct
from tests.support import ContentServer, raises_status


def test_create_page_with_sections_and_read_back_by_id_and_slug(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    created = make_page(t, hero.id, n_sections=3)
    assert created.status == common_pb2.CONTENT_STATUS_DRAFT
    assert [s.content["title"] for s in created.sections] == ["Section 0", "Section 1", "Section 2"]
    assert [s.position for s in created.sections] == [0, 1, 2]
    assert all(s.definition_name == "hero" for s in created.sections)

    by_id = t.client.pages.GetPage(pages_pb2.GetPageRequest(id=created.id))
    by_slug = t.client.pages.GetPageBySlug(
        pages_pb2.GetPageBySlugRequest(environment_id=t.env_id, slug="home")
    )
    assert by_id == by_slug == created


def test_section_without_content_gets_the_default(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    page = t.client.pages.CreatePage(
        pages_pb2.CreatePageRequest(
            environment_id=t.env_id,
            page=pages_pb2.Page(
                slug="p", title="P", sections=[pages_pb2.Section(definition_id=hero.id)]
            ),
        )
    )
    assert page.sections[0].content["title"] == "Welcome"


def test_invalid_section_content_names_the_path_and_writes_nothing(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        t.client.pages.CreatePage(
            pages_pb2.CreatePageRequest(
                environment_id=t.env_id,
                page=pages_pb2.Page(
                    slug="bad",
                    title="Bad",
                    sections=[
                        pages_pb2.Section(definition_id=hero.id, content=struct({"title": "ok"})),
                        pages_pb2.Section(definition_id=hero.id, content=struct({"title": 5})),
                    ],
                ),
            )
        )
    assert "page.sections[1].content.title" in err["fields"]
    listed = t.client.pages.ListPages(pages_pb2.ListPagesRequest(environment_id=t.env_id))
    assert list(listed.pages) == []


def test_invalid_json_schema_is_rejected(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        make_definition(t, schema={"type": "no-such-type"})
    assert any(f.startswith("section_definition.schema") for f in err["fields"])


def test_duplicate_slug_is_already_exists_but_other_environment_is_fine(
    content_server: ContentServer,
) -> None:
    from loom.content.v1 import tenancy_pb2

    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    make_page(t, hero.id, slug="about")
    with raises_status(grpc.StatusCode.ALREADY_EXISTS):
        make_page(t, hero.id, slug="about")
    staging = t.client.tenancy.CreateEnvironment(
        tenancy_pb2.CreateEnvironmentRequest(
            site_id=t.site_id, environment=tenancy_pb2.Environment(name="staging")
        )
    )
    t2 = type(t)(t.team_id, t.key, t.site_id, staging.id, t.client)
    hero2 = make_definition(t2)
    assert make_page(t2, hero2.id, slug="about").slug == "about"


def test_bad_slugs_are_invalid(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    for slug in ["Home", "a b", "-x", "x-", "ünï", "", "a" * 201]:
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            t.client.pages.CreatePage(
                pages_pb2.CreatePageRequest(
                    environment_id=t.env_id, page=pages_pb2.Page(slug=slug, title="T")
                )
            )
        assert err["fields"] == ["page.slug"]


def test_list_pages_paginates_and_filters_by_status(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    for i in range(7):
        t.client.pages.CreatePage(
            pages_pb2.CreatePageRequest(
                environment_id=t.env_id,
                page=pages_pb2.Page(
                    slug=f"p{i}",
                    title=f"P{i}",
                    status=common_pb2.CONTENT_STATUS_PUBLISHED
                    if i % 2
                    else common_pb2.CONTENT_STATUS_DRAFT,
                ),
            )
        )
    seen, token = [], ""
    while True:
        resp = t.client.pages.ListPages(
            pages_pb2.ListPagesRequest(environment_id=t.env_id, page_size=3, page_token=token)
        )
        seen += [p.slug for p in resp.pages]
        token = resp.next_page_token
        if not token:
            break
    assert seen == [f"p{i}" for i in range(7)]
    published = t.client.pages.ListPages(
        pages_pb2.ListPagesRequest(
            environment_id=t.env_id, status=common_pb2.CONTENT_STATUS_PUBLISHED
        )
    )
    assert [p.slug for p in published.pages] == ["p1", "p3", "p5"]
    first = t.client.pages.ListPages(
        pages_pb2.ListPagesRequest(environment_id=t.env_id, page_size=2)
    )
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        t.client.pages.ListPages(
            pages_pb2.ListPagesRequest(
                environment_id=t.env_id,
                page_token=first.next_page_token,
                status=common_pb2.CONTENT_STATUS_DRAFT,
            )
        )
    assert err["fields"] == ["page_token"]


def test_update_page_with_mask_and_etag(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    page = make_page(t, hero.id)
    updated = t.client.pages.UpdatePage(
        pages_pb2.UpdatePageRequest(
            page=pages_pb2.Page(id=page.id, title="New title", slug="ignored-by-mask"),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        )
    )
    assert (updated.title, updated.slug) == ("New title", "home")
    assert updated.etag != page.etag
    assert len(updated.sections) == 2
    with raises_status(grpc.StatusCode.ABORTED):
        t.client.pages.UpdatePage(
            pages_pb2.UpdatePageRequest(
                page=pages_pb2.Page(id=page.id, title="Stale", etag=page.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["title"]),
            )
        )
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        t.client.pages.UpdatePage(
            pages_pb2.UpdatePageRequest(
                page=pages_pb2.Page(id=page.id),
                update_mask=field_mask_pb2.FieldMask(paths=["sections"]),
            )
        )
    assert err["fields"] == ["update_mask"]


def test_section_add_update_move_remove(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    page = make_page(t, hero.id, n_sections=2)
    page = t.client.pages.AddSection(
        pages_pb2.AddSectionRequest(
            page_id=page.id,
            section=pages_pb2.Section(definition_id=hero.id, content=struct({"title": "First"})),
            position=0,
        )
    )
    assert [s.content["title"] for s in page.sections] == ["First", "Section 0", "Section 1"]
    first = page.sections[0].id
    page = t.client.pages.MoveSection(
        pages_pb2.MoveSectionRequest(page_id=page.id, section_id=first, position=99)
    )
    assert [s.content["title"] for s in page.sections] == ["Section 0", "Section 1", "First"]
    page = t.client.pages.UpdateSection(
        pages_pb2.UpdateSectionRequest(
            page_id=page.id, section_id=first, content=struct({"title": "Last"})
        )
    )
    assert page.sections[2].content["title"] == "Last"
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        t.client.pages.UpdateSection(
            pages_pb2.UpdateSectionRequest(
                page_id=page.id, section_id=first, content=struct({"nope": 1})
            )
        )
    assert "content" in err["fields"]
    page = t.client.pages.RemoveSection(
        pages_pb2.RemoveSectionRequest(page_id=page.id, section_id=page.sections[0].id)
    )
    assert [(s.content["title"], s.position) for s in page.sections] == [
        ("Section 1", 0),
        ("Last", 1),
    ]


def test_delete_page_removes_sections_and_frees_definition(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    page = make_page(t, hero.id)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION):
        t.client.pages.DeleteSectionDefinition(pages_pb2.DeleteSectionDefinitionRequest(id=hero.id))
    t.client.pages.DeletePage(pages_pb2.DeletePageRequest(id=page.id))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        t.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id))
    t.client.pages.DeleteSectionDefinition(pages_pb2.DeleteSectionDefinitionRequest(id=hero.id))


def test_request_id_makes_create_idempotent(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    req = pages_pb2.CreatePageRequest(
        environment_id=t.env_id, page=pages_pb2.Page(slug="x", title="X"), request_id="r-1"
    )
    a = t.client.pages.CreatePage(req)
    b = t.client.pages.CreatePage(req)
    assert a.id == b.id

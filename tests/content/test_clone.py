"""CloneEnvironment: a full copy with new ids and remapped references, in one transaction."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from loom.content.v1 import (
    clone_pb2,
    common_pb2,
    navigation_pb2,
    pages_pb2,
    posts_pb2,
    search_pb2,
    settings_pb2,
    tenancy_pb2,
)
from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from content_service.db.models import (
    Page,
    PageSection,
    Post,
    PostTag,
    SearchDocument,
    SectionEntry,
)
from content_service.db.values import dumps
from content_service.indexing import fulltext as search_index
from servicekit.ids import new_id
from tests.content.service_stubs import clone_stub, make_post, nav, posts, search, site_settings
from tests.content.tenants_and_pages import Tenant, make_definition, make_page, make_tenant, struct
from tests.support import ContentServer, raises_status

N_PAGES = 1_000
SECTIONS_PER_PAGE = 3
N_POSTS = 300


def seed_bulk(s: Session, env_id: str, definition_ids: list[str]) -> None:
    """N_PAGES pages x SECTIONS_PER_PAGE sections and N_POSTS tagged posts, written the way
    the service writes them (rows + search documents), in bulk to keep the test fast."""
    pages, entries, links, docs = [], [], [], []
    for p in range(N_PAGES):
        page_id = new_id()
        pages.append(
            {
                "id": page_id,
                "environment_id": env_id,
                "slug": f"bulk-{p}",
                "title": f"Bulk page {p}",
                "status": "published" if p % 3 == 0 else "draft",
                "metadata_json": dumps({"n": p}),
                "version": 1 + p % 4,
                "request_id": f"req-{p}",
                "created_at": 1,
                "updated_at": 2,
            }
        )
        contents = []
        for i in range(SECTIONS_PER_PAGE):
            entry_id = new_id()
            content = dumps({"title": f"Section {i} of page {p}", "tokens": [f"word{p}x{i}"]})
            contents.append(content)
            entries.append(
                {
                    "id": entry_id,
                    "environment_id": env_id,
                    "definition_id": definition_ids[(p + i) % len(definition_ids)],
                    "content": content,
                    "created_at": 1,
                    "updated_at": 1,
                }
            )
            links.append(
                {"id": new_id(), "page_id": page_id, "section_entry_id": entry_id, "position": i}
            )
        docs.append(
            {
                "environment_id": env_id,
                "kind": "page",
                "page_id": page_id,
                "title": f"Bulk page {p}",
                "body": search_index.page_body(contents),
                "updated_at": 1,
            }
        )
    s.execute(insert(Page), pages)
    s.execute(insert(SectionEntry), entries)
    s.execute(insert(PageSection), links)
    posts_rows, tags = [], []
    for n in range(N_POSTS):
        post_id = new_id()
        post_tags = [f"tag{n % 7}", "all"]
        posts_rows.append(
            {
                "id": post_id,
                "environment_id": env_id,
                "slug": f"post-{n}",
                "title": f"Bulk post {n}",
                "excerpt": f"Excerpt {n}",
                "body": f"Body of post {n} with term{n}",
                "status": "published",
                "author": "Bulk",
                "tags": dumps(post_tags),
                "published_at": 1_600_000_000 + n,
                "created_at": 1,
                "updated_at": 1,
            }
        )
        tags += [{"post_id": post_id, "tag": tag, "environment_id": env_id} for tag in post_tags]
        docs.append(
            {
                "environment_id": env_id,
                "kind": "post",
                "post_id": post_id,
                "title": f"Bulk post {n}",
                "body": search_index.post_body(f"Excerpt {n}", f"Body of post {n} with term{n}"),
                "updated_at": 1,
            }
        )
    s.execute(insert(Post), posts_rows)
    s.execute(insert(PostTag), tags)
    s.execute(insert(SearchDocument), docs)


def snapshot(s: Session, env_id: str) -> dict[str, Any]:
    """Everything an environment holds, with ids replaced by what they point at (slugs,
    names), so a faithful copy compares equal."""

    def q(sql: str) -> list[Any]:
        return list(s.execute(text(sql), {"env": env_id}).all())

    definitions = dict(q("select id, name from section_definitions where environment_id = :env"))
    page_slugs = dict(q("select id, slug from pages where environment_id = :env"))
    return {
        "definitions": sorted(
            q(
                "select name, schema, default_content from section_definitions"
                " where environment_id = :env"
            )
        ),
        "pages": sorted(
            q("select slug, title, status, metadata from pages where environment_id = :env")
        ),
        "sections": sorted(
            (page_slugs[r[0]], r[1], definitions[r[2]], r[3])
            for r in q(
                "select ps.page_id, ps.position, se.definition_id, se.content"
                " from page_sections ps join section_entries se on se.id = ps.section_entry_id"
                " where se.environment_id = :env"
            )
        ),
        "posts": sorted(
            q(
                "select slug, title, excerpt, body, status, author, tags, published_at"
                " from posts where environment_id = :env"
            )
        ),
        "post_tags": sorted(
            q(
                "select p.slug, t.tag from post_tags t join posts p on p.id = t.post_id"
                " where t.environment_id = :env"
            )
        ),
        "menus": sorted(
            (r[0], json.dumps(_slugs(json.loads(r[1]), page_slugs)))
            for r in q("select name, items from navigation where environment_id = :env")
        ),
        "settings": q(
            "select site_id, site_name, default_locale, theme, seo_title, seo_description, extra"
            " from site_settings where environment_id = :env"
        ),
        "search": sorted(
            (r[0], page_slugs.get(r[1]) if r[1] else None, r[2], r[3], r[4])
            for r in q(
                "select kind, page_id, (select slug from posts where id = post_id), title, body"
                " from search_documents where environment_id = :env"
            )
        ),
    }


def _slugs(value: Any, page_slugs: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [_slugs(v, page_slugs) for v in value]
    if isinstance(value, dict):
        out = {k: _slugs(v, page_slugs) for k, v in value.items()}
        if "page_id" in out:
            out["page_id"] = page_slugs[out["page_id"]]  # KeyError: points outside the env
        return out
    return value


def ids(s: Session, env_id: str) -> set[str]:
    out: set[str] = set()
    for table in ("section_definitions", "section_entries", "pages", "posts", "navigation"):
        out |= set(
            s.execute(
                text(f"select id from {table} where environment_id = :env"), {"env": env_id}
            ).scalars()
        )
    return out


def build_source(t: Tenant, content_server: ContentServer) -> dict[str, str]:
    hero = make_definition(t)
    feature = make_definition(t, name="feature")
    home = make_page(t, hero.id, slug="home", n_sections=2)
    about = make_page(t, feature.id, slug="about", n_sections=1)
    make_post(t, "hello", title="Hello capybara", tags=["news"])
    nav(t).SetMenu(
        navigation_pb2.SetMenuRequest(
            environment_id=t.env_id,
            menu=navigation_pb2.Menu(
                name="main",
                items=[
                    navigation_pb2.MenuItem(label="Home", page_id=home.id),
                    navigation_pb2.MenuItem(
                        label="More",
                        children=[
                            navigation_pb2.MenuItem(label="About", page_id=about.id),
                            navigation_pb2.MenuItem(label="Blog", url="/blog"),
                        ],
                    ),
                ],
            ),
        )
    )
    site_settings(t).UpdateSiteSettings(
        settings_pb2.UpdateSiteSettingsRequest(
            site_settings=settings_pb2.SiteSettings(
                environment_id=t.env_id, theme="dark", extra=struct({"k": [1, "two"]})
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["theme", "extra"]),
        )
    )
    with content_server.db.write() as s:
        seed_bulk(s, t.env_id, [hero.id, feature.id])
    return {"home": home.id, "about": about.id}


def clone(t: Tenant, name: str, source: str | None = None) -> clone_pb2.CloneEnvironmentResponse:
    return clone_stub(t).CloneEnvironment(
        clone_pb2.CloneEnvironmentRequest(
            source_environment_id=t.env_id if source is None else source, name=name
        ),
        timeout=60,
    )


def test_clone_copies_everything_with_new_ids_and_remapped_references(
    content_server: ContentServer, caplog: pytest.LogCaptureFixture
) -> None:
    t = make_tenant(content_server.admin)
    source_ids = build_source(t, content_server)
    with content_server.db.read() as s:
        before = snapshot(s, t.env_id)

    caplog.set_level(logging.INFO, logger="content_service.clone")
    started = time.perf_counter()
    resp = clone(t, "prod-candidate")
    elapsed = time.perf_counter() - started
    total = sum(value for _, value in resp.counts.ListFields())
    print(f"\nclone of {total} rows ({content_server.db.dialect}) took {elapsed:.2f} s")

    new_env = resp.environment
    assert new_env.site_id == t.site_id
    assert new_env.name == "prod-candidate"
    assert resp.counts == clone_pb2.CloneCounts(
        section_definitions=2,
        pages=N_PAGES + 2,
        sections=N_PAGES * SECTIONS_PER_PAGE + 3,
        posts=N_POSTS + 1,
        post_tags=N_POSTS * 2 + 1,
        menus=1,
        site_settings=1,
    )
    with content_server.db.read() as s:
        after_source = snapshot(s, t.env_id)
        copy = snapshot(s, new_env.id)
        assert not ids(s, t.env_id) & ids(s, new_env.id)
    assert after_source == before
    assert copy == before
    assert any(f"copied {N_PAGES + 2} pages" in r.getMessage() for r in caplog.records)

    # Through the API: the copy's menu points at the copy's pages, the copy is searchable.
    menu = nav(t).GetMenu(navigation_pb2.GetMenuRequest(environment_id=new_env.id, name="main"))
    home = t.client.pages.GetPageBySlug(
        pages_pb2.GetPageBySlugRequest(environment_id=new_env.id, slug="home")
    )
    assert menu.items[0].page_id == home.id != source_ids["home"]
    assert menu.items[0].page_slug == "home"
    assert menu.items[1].children[0].page_slug == "about"
    hits = search(t, "word417x2", env_id=new_env.id).results
    assert [h.slug for h in hits] == ["bulk-417"]
    assert hits[0].id != search(t, "word417x2").results[0].id
    assert [h.slug for h in search(t, "capybara", env_id=new_env.id).results] == ["hello"]
    tagged = posts(t).ListPosts(posts_pb2.ListPostsRequest(environment_id=new_env.id, tag="news"))
    assert [p.slug for p in tagged.posts] == ["hello"]

    # The two environments are independent from now on.
    t.client.pages.DeletePage(pages_pb2.DeletePageRequest(id=home.id))
    assert [h.slug for h in search(t, "capybara").results] == ["hello"]
    assert t.client.pages.GetPage(pages_pb2.GetPageRequest(id=source_ids["home"])).slug == "home"


def test_clone_of_a_small_environment_through_the_api_only(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    page = make_page(t, hero.id, slug="solo")
    resp = clone(t, "copy")
    assert resp.counts.pages == 1
    assert resp.counts.site_settings == 0  # never written: the copy reads defaults too
    copied = t.client.pages.GetPageBySlug(
        pages_pb2.GetPageBySlugRequest(environment_id=resp.environment.id, slug="solo")
    )
    assert copied.id != page.id
    assert [s.content for s in copied.sections] == [s.content for s in page.sections]
    assert copied.sections[0].definition_id != hero.id
    assert copied.sections[0].definition_name == "hero"
    assert copied.status == common_pb2.CONTENT_STATUS_DRAFT
    kinds = [search_pb2.SEARCH_KIND_PAGE]
    assert [r.id for r in search(t, "solo", env_id=resp.environment.id, kinds=kinds).results] == [
        copied.id
    ]


def test_clone_errors_write_nothing(content_server: ContentServer) -> None:
    acme = make_tenant(content_server.admin, "acme")
    other = make_tenant(content_server.admin, "other")
    hero = make_definition(acme)
    make_page(acme, hero.id)
    with raises_status(grpc.StatusCode.ALREADY_EXISTS):
        clone(acme, "dev")  # the source's own name
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        clone(acme, "Not A Name")
    assert err["fields"] == ["name"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        clone(acme, "x", source="")
    assert err["fields"] == ["source_environment_id"]
    with raises_status(grpc.StatusCode.NOT_FOUND):
        clone(other, "stolen", source=acme.env_id)
    envs = acme.client.tenancy.ListEnvironments(
        tenancy_pb2.ListEnvironmentsRequest(site_id=acme.site_id)
    )
    assert [e.name for e in envs.environments] == ["dev"]
    with content_server.db.read() as s:
        assert s.execute(text("select count(*) from pages")).scalar() == 1

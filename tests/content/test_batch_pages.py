"""BatchCreatePages (AIP-233): up to 500 pages in one transaction, each by CreatePage's rules,
every error naming its item; and the faster GetPage path keeps the same tenant scope."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2
from loom.content.v1 import common_pb2, pages_pb2
from sqlalchemy import func, select

from content_service.db.models import Base
from content_service.pages import MAX_PAGES_PER_BATCH
from tests.content.service_stubs import search_ids
from tests.content.tenants_and_pages import Tenant, make_definition, make_page, make_tenant, struct
from tests.support import ContentServer, raises_status


def item(
    definition_id: str,
    slug: str,
    *,
    title: str | None = None,
    contents: list[dict[str, Any] | None] | None = None,
    env_id: str = "",
    request_id: str = "",
    **page: Any,
) -> pages_pb2.CreatePageRequest:
    """One CreatePageRequest of a batch; a None content means the definition's default."""
    return pages_pb2.CreatePageRequest(
        environment_id=env_id,
        request_id=request_id,
        page=pages_pb2.Page(
            slug=slug,
            title=title or f"Page {slug}",
            sections=[
                pages_pb2.Section(definition_id=definition_id)
                if c is None
                else pages_pb2.Section(definition_id=definition_id, content=struct(c))
                for c in (contents if contents is not None else [{"title": f"About {slug}"}])
            ],
            **page,
        ),
    )


def batch(t: Tenant, *items: pages_pb2.CreatePageRequest, env_id: str | None = None) -> Any:
    return t.client.pages.BatchCreatePages(
        pages_pb2.BatchCreatePagesRequest(environment_id=env_id or t.env_id, requests=items)
    )


def slugs(t: Tenant) -> list[str]:
    listed = t.client.pages.ListPages(
        pages_pb2.ListPagesRequest(environment_id=t.env_id, page_size=1000)
    )
    return sorted(p.slug for p in listed.pages)


def row_counts(server: ContentServer) -> dict[str, int]:
    with server.db.read() as s:
        return {
            table.name: int(s.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def test_batch_returns_pages_in_order_gettable_and_searchable(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    created = batch(
        t,
        item(hero.id, "zeta", title="Zeta wombat", contents=[{"title": "Ocelot"}, None]),
        item(hero.id, "alpha", env_id=t.env_id, status=common_pb2.CONTENT_STATUS_PUBLISHED),
        item(hero.id, "mid", contents=[], metadata=struct({"seo": {"n": 3}})),
    ).pages

    assert [p.slug for p in created] == ["zeta", "alpha", "mid"]
    assert [p.status for p in created] == [
        common_pb2.CONTENT_STATUS_DRAFT,
        common_pb2.CONTENT_STATUS_PUBLISHED,
        common_pb2.CONTENT_STATUS_DRAFT,
    ]
    assert [s.content["title"] for s in created[0].sections] == ["Ocelot", "Welcome"]
    assert [s.position for s in created[0].sections] == [0, 1]
    assert all(s.definition_name == "hero" and s.id for s in created[0].sections)
    assert created[2].metadata["seo"]["n"] == 3
    assert len({p.id for p in created}) == 3
    for page in created:
        assert page.environment_id == t.env_id
        assert page.etag == 'W/"1"'
        assert t.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id)) == page
        assert (
            t.client.pages.GetPageBySlug(
                pages_pb2.GetPageBySlugRequest(environment_id=t.env_id, slug=page.slug)
            )
            == page
        )
    # Indexed in the same transaction, like CreatePage: by title and by section text.
    assert search_ids(t, "wombat") == [created[0].id]
    assert search_ids(t, "ocelot") == [created[0].id]
    assert search_ids(t, "alpha") == [created[1].id]


def test_batch_writes_exactly_what_createpage_writes_per_page(
    content_server: ContentServer,
) -> None:
    """Same rows in every table (pages, sections, links, search documents, index outbox...)
    as CreatePage: a page the batch writes is indexed and queued exactly like any other."""
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    before = row_counts(content_server)
    t.client.pages.CreatePage(
        pages_pb2.CreatePageRequest(
            environment_id=t.env_id,
            page=item(hero.id, "single", contents=[{"title": "a"}, {"title": "b"}]).page,
        )
    )
    one = row_counts(content_server)
    batch(t, *(item(hero.id, f"p{i}", contents=[{"title": "a"}, {"title": "b"}]) for i in range(4)))
    after = row_counts(content_server)
    per_page = {name: one[name] - before[name] for name in before}
    assert per_page["pages"] == 1
    assert per_page["search_documents"] == 1
    assert {name: after[name] - one[name] for name in one} == {
        name: 4 * n for name, n in per_page.items()
    }


def test_duplicate_slug_inside_the_batch_fails_it_whole(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    before = row_counts(content_server)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        batch(t, item(hero.id, "a"), item(hero.id, "b"), item(hero.id, "a"))
    assert err["fields"] == ["requests[2].page.slug"]
    assert "requests[0].page.slug" in err["message"]
    assert slugs(t) == []
    assert row_counts(content_server) == before


def test_slug_of_an_existing_page_fails_the_batch_whole(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    make_page(t, hero.id, slug="home")
    before = row_counts(content_server)
    with raises_status(grpc.StatusCode.ALREADY_EXISTS) as err:
        batch(t, item(hero.id, "fresh", title="Capybara"), item(hero.id, "home"))
    assert "requests[1].page.slug" in err["message"]
    assert err["reason"] == "ALREADY_EXISTS"
    assert slugs(t) == ["home"]
    assert search_ids(t, "capybara") == []
    assert row_counts(content_server) == before


def test_batch_size_is_capped_and_required(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    too_many = [item(hero.id, f"p{i}") for i in range(MAX_PAGES_PER_BATCH + 1)]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        batch(t, *too_many)
    assert err["fields"] == ["requests"]
    assert str(MAX_PAGES_PER_BATCH) in err["message"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        batch(t)
    assert err["fields"] == ["requests"]
    assert slugs(t) == []


def test_another_teams_environment_is_not_found_and_untouched(
    content_server: ContentServer,
) -> None:
    owner = make_tenant(content_server.admin, "owner")
    hero = make_definition(owner)
    intruder = make_tenant(content_server.admin, "intruder")
    with raises_status(grpc.StatusCode.NOT_FOUND):
        batch(intruder, item(hero.id, "sneaky"), env_id=owner.env_id)
    # Naming the victim's environment on the items only is no way around it.
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        batch(intruder, item(hero.id, "sneaky", env_id=owner.env_id))
    assert err["fields"] == ["requests[0].environment_id"]
    assert slugs(owner) == []
    # Reads stay scoped too: the owner's page is NOT_FOUND for the other team, like a missing one.
    page = batch(owner, item(hero.id, "mine")).pages[0]
    with raises_status(grpc.StatusCode.NOT_FOUND) as other:
        intruder.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id))
    with raises_status(grpc.StatusCode.NOT_FOUND) as missing:
        intruder.client.pages.GetPage(pages_pb2.GetPageRequest(id="0" * 26))
    assert other["message"].replace(page.id, "X") == missing["message"].replace("0" * 26, "X")
    with raises_status(grpc.StatusCode.NOT_FOUND):
        intruder.client.pages.GetPageBySlug(
            pages_pb2.GetPageBySlugRequest(environment_id=owner.env_id, slug="mine")
        )


def test_field_violations_name_the_item(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    ok = item(hero.id, "ok")
    nan = struct_pb2.Struct()
    nan.update({"x": math.nan})
    cases: list[tuple[pages_pb2.CreatePageRequest, str]] = [
        (item(hero.id, "Not A Slug"), "requests[1].page.slug"),
        (item(hero.id, "t", title=" "), "requests[1].page.title"),
        (
            item(hero.id, "c", contents=[{"title": "ok"}, {"title": 5}]),
            "requests[1].page.sections[1].content.title",
        ),
        (item("no-such-definition", "d"), "requests[1].page.sections[0].definition_id"),
        (item(hero.id, "s", status=99), "requests[1].page.status"),  # type: ignore[arg-type]
        (item(hero.id, "m", metadata=nan), "requests[1].page.metadata"),
        (item(hero.id, "r", request_id="x" * 65), "requests[1].request_id"),
        (item(hero.id, "e", env_id="elsewhere"), "requests[1].environment_id"),
    ]
    for bad, field in cases:
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            batch(t, ok, bad)
        assert err["fields"] == [field], (field, err)
    assert slugs(t) == []


def test_request_ids_make_a_retried_batch_return_the_same_pages(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    items = [item(hero.id, f"p{i}", request_id=f"import-{i}") for i in range(3)]
    first = batch(t, *items).pages
    again = batch(t, *items).pages
    assert list(again) == list(first)
    assert slugs(t) == ["p0", "p1", "p2"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        batch(t, item(hero.id, "x", request_id="same"), item(hero.id, "y", request_id="same"))
    assert err["fields"] == ["requests[1].request_id"]


def test_created_pages_equal_what_getpage_returns_for_every_kind_of_value(
    content_server: ContentServer,
) -> None:
    """The create responses reuse the request's Structs: whatever the values (whole and
    fractional numbers, nesting, lists, nulls, empty objects, no metadata), the page a create
    returns is the page GetPage returns afterwards."""
    t = make_tenant(content_server.admin)
    loose = make_definition(t, "loose", {"type": "object"})
    odd = {
        "title": "Números ✓",
        "whole": 3,
        "big": 1e300,
        "fraction": 0.1,
        "negative": -2.5,
        "nested": {"list": [1, "two", None, True, {"deep": []}], "empty": {}},
        "nothing": None,
    }
    items = [
        item(loose.id, "odd", contents=[odd, {}, None], metadata=struct(odd)),
        item(loose.id, "bare", contents=[]),
        item(loose.id, "empty-meta", contents=[{}], metadata=struct({})),
    ]
    created = list(batch(t, *items).pages)
    single = t.client.pages.CreatePage(
        item(
            loose.id,
            "single",
            title="Single",
            contents=[odd],
            env_id=t.env_id,
            metadata=struct(odd),
        )
    )
    # Output-only fields a client sends, and fields this server does not know, are not echoed.
    sent = pages_pb2.Page(
        id="mine",
        environment_id="elsewhere",
        slug="nosy",
        title="Nosy",
        etag='W/"99"',
        create_time=timestamp_pb2.Timestamp(seconds=5, nanos=7),
        sections=[
            pages_pb2.Section(
                id="x", definition_id=loose.id, definition_name="y", position=9, content=struct({})
            )
        ],
    )
    unknown = pages_pb2.Page.FromString(sent.SerializeToString() + b"\x98\x06\x01")  # field 99
    assert b"\x98\x06" in unknown.SerializeToString()  # kept, and sent on
    nosy = batch(t, pages_pb2.CreatePageRequest(page=unknown)).pages[0]
    assert (nosy.id, nosy.environment_id, nosy.etag) != ("mine", "elsewhere", 'W/"99"')
    assert nosy.create_time.nanos == 0
    assert (nosy.sections[0].id, nosy.sections[0].position) != ("x", 9)
    assert nosy.sections[0].definition_name == "loose"
    assert b"\x98\x06" not in nosy.SerializeToString()
    for page in [*created, single, nosy]:
        assert t.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id)) == page
    assert created[0].sections[0].content["nested"]["list"][4]["deep"] == []
    assert created[0].sections[2].content["title"] == "Welcome"  # the default, not copied
    assert created[1].HasField("metadata")
    assert not created[1].metadata.fields


def test_racing_batches_over_the_same_slugs_one_wins_whole_the_rest_write_nothing(
    content_server: ContentServer,
) -> None:
    """Four batches at once, sharing ten slugs: on SQLite the writers queue and the check
    before the insert refuses the later ones; on PostgreSQL they run side by side and the
    unique index refuses all but the first to commit. Either way exactly one batch lands whole,
    the others are ALREADY_EXISTS (never INTERNAL) and leave no page, section or document."""
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    before = row_counts(content_server)
    start = threading.Barrier(4)

    def race(k: int) -> Any:
        items = [item(hero.id, f"shared-{i}", title=f"batch {k}") for i in range(10)]
        items += [item(hero.id, f"own-{k}-{i}", title=f"batch {k}") for i in range(40)]
        start.wait()
        try:
            return batch(t, *items)
        except grpc.RpcError as exc:
            return exc

    with ThreadPoolExecutor(4) as pool:
        outcomes = dict(enumerate(pool.map(race, range(4))))

    won = [k for k, o in outcomes.items() if not isinstance(o, grpc.RpcError)]
    assert len(won) == 1, outcomes
    for k, outcome in outcomes.items():
        if k != won[0]:
            assert outcome.code() == grpc.StatusCode.ALREADY_EXISTS, outcome
    listed = t.client.pages.ListPages(
        pages_pb2.ListPagesRequest(environment_id=t.env_id, page_size=1000)
    ).pages
    assert len(listed) == 50
    assert {p.title for p in listed} == {f"batch {won[0]}"}
    after = row_counts(content_server)
    assert after["pages"] - before["pages"] == 50
    assert after["section_entries"] - before["section_entries"] == 50
    assert after["search_documents"] - before["search_documents"] == 50
    assert after["index_outbox"] - before["index_outbox"] == 50

"""Full-text search over pages and posts, on SQLite (FTS5) and PostgreSQL (tsvector)."""

from __future__ import annotations

import random

import grpc
import pytest
from google.protobuf import field_mask_pb2
from loom.content.v1 import common_pb2, pages_pb2, posts_pb2, search_pb2, tenancy_pb2
from sqlalchemy import text

from tests.content.service_stubs import make_post, posts, search, search_ids
from tests.content.tenants_and_pages import Tenant, make_definition, make_tenant, struct
from tests.support import ContentServer, errors_of, raises_status

OPEN_SCHEMA = {"type": "object"}
PAGE = search_pb2.SEARCH_KIND_PAGE
POST = search_pb2.SEARCH_KIND_POST


def open_definition(t: Tenant) -> str:
    return make_definition(t, name="block", schema=OPEN_SCHEMA).id


def create_page(
    t: Tenant, definition_id: str, slug: str, title: str, *contents: dict[str, object]
) -> pages_pb2.Page:
    return t.client.pages.CreatePage(
        pages_pb2.CreatePageRequest(
            environment_id=t.env_id,
            page=pages_pb2.Page(
                slug=slug,
                title=title,
                sections=[
                    pages_pb2.Section(definition_id=definition_id, content=struct(c))
                    for c in contents
                ],
            ),
        )
    )


def test_page_is_searchable_by_title_and_any_text_in_its_sections_as_soon_as_created(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    block = open_definition(t)
    page = create_page(
        t,
        block,
        "pricing",
        "Pricing",
        {"heading": "Plans for every team", "cards": [{"name": "Starter", "blurb": "Zebra"}]},
        {"nested": {"deeper": {"text": "Quokka support included"}}, "count": 3},
    )
    for query in ("pricing", "PRICING", "plans team", "zebra", "quokka", "starter"):
        assert search_ids(t, query) == [page.id], query
    hit = search(t, "quokka").results[0]
    assert (hit.kind, hit.slug, hit.title) == (PAGE, "pricing", "Pricing")
    assert hit.status == common_pb2.CONTENT_STATUS_DRAFT
    assert "<mark>Quokka</mark>" in hit.snippet
    assert [p.text for p in hit.snippet_parts if p.match] == ["Quokka"]
    # Keys and numbers of the JSON are not text; words that appear nowhere find nothing.
    assert search_ids(t, "heading") == []
    assert search_ids(t, "giraffe") == []
    # Every word must match.
    assert search_ids(t, "quokka giraffe") == []


def test_search_follows_every_page_write_and_forgets_deleted_pages(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    block = open_definition(t)
    page = create_page(t, block, "about", "About us", {"text": "Founded by otters"})

    t.client.pages.UpdatePage(
        pages_pb2.UpdatePageRequest(
            page=pages_pb2.Page(id=page.id, title="Our story"),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        )
    )
    assert search_ids(t, "about") == []
    assert search_ids(t, "story") == [page.id]

    added = t.client.pages.AddSection(
        pages_pb2.AddSectionRequest(
            page_id=page.id,
            section=pages_pb2.Section(definition_id=block, content=struct({"t": "Badgers"})),
        )
    )
    assert search_ids(t, "badgers") == [page.id]

    new_section = added.sections[-1].id
    t.client.pages.UpdateSection(
        pages_pb2.UpdateSectionRequest(
            page_id=page.id, section_id=new_section, content=struct({"t": "Wombats"})
        )
    )
    assert search_ids(t, "badgers") == []
    assert search_ids(t, "wombats") == [page.id]

    t.client.pages.MoveSection(
        pages_pb2.MoveSectionRequest(page_id=page.id, section_id=new_section, position=0)
    )
    assert search_ids(t, "wombats otters") == [page.id]

    t.client.pages.RemoveSection(
        pages_pb2.RemoveSectionRequest(page_id=page.id, section_id=new_section)
    )
    assert search_ids(t, "wombats") == []
    assert search_ids(t, "otters") == [page.id]

    t.client.pages.DeletePage(pages_pb2.DeletePageRequest(id=page.id))
    assert search_ids(t, "otters") == []
    assert search_ids(t, "story") == []


def test_a_rejected_write_leaves_nothing_searchable(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)  # title must be a string
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT):
        t.client.pages.CreatePage(
            pages_pb2.CreatePageRequest(
                environment_id=t.env_id,
                page=pages_pb2.Page(
                    slug="p",
                    title="Narwhal",
                    sections=[pages_pb2.Section(definition_id=hero.id, content=struct({"x": 1}))],
                ),
            )
        )
    assert search_ids(t, "narwhal") == []


def test_posts_are_searched_by_title_excerpt_and_body(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    post = make_post(
        t, "launch", title="We launched", excerpt="Short tapir news", body="The long **axolotl**"
    )
    for query in ("launched", "tapir", "axolotl"):
        assert search_ids(t, query) == [post.id], query
    posts(t).UpdatePost(
        posts_pb2.UpdatePostRequest(
            post=posts_pb2.Post(id=post.id, body="Now about pangolins"),
            update_mask=field_mask_pb2.FieldMask(paths=["body"]),
        )
    )
    assert search_ids(t, "axolotl") == []
    assert search_ids(t, "pangolins") == [post.id]
    posts(t).DeletePost(posts_pb2.DeletePostRequest(id=post.id))
    assert search_ids(t, "pangolins") == []


def test_kind_filter_and_title_matches_rank_first(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    block = open_definition(t)
    in_body = create_page(
        t, block, "a", "Something else", {"text": "we also sell lanterns here and there"}
    )
    in_title = create_page(t, block, "b", "Lanterns", {"text": "all kinds of lights"})
    post = make_post(t, "c", title="Shop news", body="lanterns arrived")

    both = search(t, "lanterns")
    assert {r.id for r in both.results} == {in_body.id, in_title.id, post.id}
    assert both.results[0].id == in_title.id
    scores = [r.score for r in both.results]
    assert scores == sorted(scores, reverse=True)
    assert search_ids(t, "lanterns", kinds=[PAGE])[0] == in_title.id
    assert set(search_ids(t, "lanterns", kinds=[PAGE])) == {in_body.id, in_title.id}
    assert search_ids(t, "lanterns", kinds=[POST]) == [post.id]
    assert len(search_ids(t, "lanterns", kinds=[PAGE, POST])) == 3
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        search(t, "lanterns", kinds=[7])
    assert err["fields"] == ["kinds[0]"]


def test_snippets_are_html_safe_and_mark_the_match(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    make_post(t, "x", title="Tags", body='if a < b && kiwi > c then say "hi" <b>')
    hit = search(t, "kiwi").results[0]
    assert "<b>" not in hit.snippet
    assert "a &lt; b &amp;&amp; <mark>kiwi</mark> &gt; c" in hit.snippet
    plain = "".join(p.text for p in hit.snippet_parts)
    assert "a < b && kiwi > c" in plain
    # A page without section text gets its snippet from the title.
    block = open_definition(t)
    create_page(t, block, "empty", "Lonely kiwi")
    hit = search(t, "lonely").results[0]
    assert "".join(p.text for p in hit.snippet_parts) == "Lonely kiwi"


def test_search_pages_through_all_results_once(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    for i in range(23):
        make_post(t, f"p{i}", title=f"Walrus {i}", body="walrus " * (i % 5 + 1))
    seen: list[str] = []
    token = ""
    while True:
        resp = search(t, "walrus", page_size=10, page_token=token)
        assert len(resp.results) <= 10
        seen += [r.id for r in resp.results]
        token = resp.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 23
    first = search(t, "walrus", page_size=10)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        search(t, "other", page_size=10, page_token=first.next_page_token)
    assert err["fields"] == ["page_token"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        search(t, "walrus", page_token="garbage")
    assert err["fields"] == ["page_token"]


def test_search_is_scoped_to_the_environment_and_team(content_server: ContentServer) -> None:
    acme = make_tenant(content_server.admin, "acme")
    other = make_tenant(content_server.admin, "other")
    make_post(acme, "x", title="Secret meerkat plans")
    staging = acme.client.tenancy.CreateEnvironment(
        tenancy_pb2.CreateEnvironmentRequest(
            site_id=acme.site_id, environment=tenancy_pb2.Environment(name="staging")
        )
    )
    assert search_ids(acme, "meerkat", env_id=staging.id) == []
    make_post(other, "x", title="Other meerkat")
    assert len(search_ids(acme, "meerkat")) == 1
    with raises_status(grpc.StatusCode.NOT_FOUND):
        search(other, "meerkat", env_id=acme.env_id)


HOSTILE = [
    '"',
    '""',
    '"pricing',
    "pricing\"'",
    "pricing AND",
    "AND",
    "OR pricing",
    "NOT",
    "NOT pricing",
    "*",
    "pricing*",
    "pri*ng",
    "NEAR(",
    "NEAR(pricing plans, 2)",
    "^pricing",
    "title:pricing",
    ":",
    "{title}: pricing",
    "(",
    "pricing)",
    "((((",
    "-pricing",
    "+pricing",
    "pricing & plans | !x",
    "pricing <-> plans",
    "'pricing':*",
    "\\",
    "%",
    "_",
    "; DROP TABLE pages; --",
    "\x00",
    "pricing\x00plans",
    "\ue000pricing\ue001",
    "🙂 pricing",
    "ünïcödé",
    "x" * 500,
    "pricing " * 60,
]


def check_hostile(t: Tenant, query: str) -> None:
    """A result, or INVALID_ARGUMENT on `query`: never INTERNAL or any other status."""
    try:
        search(t, query)
    except grpc.RpcError as exc:
        failure = errors_of(exc)
        assert failure["code"] == grpc.StatusCode.INVALID_ARGUMENT, (query, failure)
        assert failure["fields"] == ["query"], (query, failure)


def test_user_input_is_data_never_query_syntax(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    block = open_definition(t)
    page = create_page(t, block, "pricing", "Pricing", {"text": "Plans and prices, AND more"})
    for query in HOSTILE:
        check_hostile(t, query)
    # Operators are just words; symbols around a word do not hide it.
    for query in ('"pricing', "pricing*", "^pricing", "(pricing)", "pricing AND", "-pricing"):
        assert search_ids(t, query) == [page.id], query
    assert search_ids(t, "title:pricing") == []  # a word "title" must occur: it does not
    assert search_ids(t, "NOT pricing") == []  # "not" is a word like any other
    for query in ("", "   ", "\t\n"):
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            search(t, query)
        assert err["fields"] == ["query"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        search(t, "x" * 501)
    assert err["fields"] == ["query"]


def test_random_strings_never_fail_the_search(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    make_post(t, "x", title="Plain words", body="Anything goes here")
    alphabet = [*"abcXYZ019 \"'*^:()-+&|!<>{}[]\\/.,;~`@#$%_=?", "NEAR", "AND", "OR", "é", "\x00"]
    rng = random.Random(1234)
    for _ in range(150):
        query = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        check_hostile(t, query)


def test_deleting_the_environment_empties_its_index(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    block = open_definition(t)
    create_page(t, block, "p", "Ocelot", {"text": "Ocelot"})
    make_post(t, "x", title="Ocelot")
    t.client.tenancy.DeleteEnvironment(tenancy_pb2.DeleteEnvironmentRequest(id=t.env_id))
    with content_server.db.read() as s:
        assert s.execute(text("select count(*) from search_documents")).scalar() == 0
        if content_server.db.dialect == "sqlite":
            hits = s.execute(
                text("select count(*) from search_fts where search_fts match 'ocelot'")
            ).scalar()
            assert hits == 0


@pytest.mark.parametrize("word", ["café", "naïve"])
def test_accented_words_find_themselves(content_server: ContentServer, word: str) -> None:
    t = make_tenant(content_server.admin)
    post = make_post(t, "x", title=f"A {word} story")
    assert search_ids(t, word) == [post.id]
    assert search_ids(t, word.upper()) == [post.id]

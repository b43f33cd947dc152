"""Every query the new RPCs run is an index SEARCH on SQLite, never a full-table SCAN, and the
tenant-scoped list queries read rows in index order (no sort of the whole environment).

The statements are the real ones: captured from the engine while the RPCs run, then explained
with their own parameters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from google.protobuf import field_mask_pb2
from loom.content.v1 import (
    chat_pb2,
    clone_pb2,
    common_pb2,
    navigation_pb2,
    pages_pb2,
    posts_pb2,
    search_pb2,
    settings_pb2,
)
from sqlalchemy import event

from content_service.db.raw import RawSelect
from tests.content.service_stubs import (
    chat,
    clone_stub,
    make_post,
    nav,
    posts,
    search,
    site_settings,
)
from tests.content.tenants_and_pages import make_definition, make_page, make_tenant, struct
from tests.support import ContentServer

PUBLISHED = common_pb2.CONTENT_STATUS_PUBLISHED


@pytest.fixture
def backend() -> str:
    """EXPLAIN QUERY PLAN is SQLite's; these tests run on SQLite only."""
    return "sqlite"


@contextmanager
def captured(server: ContentServer) -> Iterator[list[tuple[str, Any]]]:
    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append((statement, parameters))

    def record_raw(statement: str, parameters: Any) -> None:
        record(None, None, statement, parameters)

    engines = {server.db.read_engine, server.db.write_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    RawSelect.observers.append(record_raw)  # the hot reads on the driver's cursor
    try:
        yield statements
    finally:
        RawSelect.observers.remove(record_raw)
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def plan(server: ContentServer, statement: str, parameters: Any) -> list[str]:
    with server.db.read_engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return [str(row[3]) for row in rows]


def full_scans(lines: list[str]) -> list[str]:
    # "SCAN search_fts VIRTUAL TABLE INDEX ..." is FTS5 answering MATCH from its own index.
    return [line for line in lines if line.startswith("SCAN ") and "VIRTUAL TABLE" not in line]


def sorts(lines: list[str]) -> list[str]:
    return [line for line in lines if "TEMP B-TREE" in line]


def test_list_and_read_queries_use_indexes(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    pages = [make_page(t, hero.id, slug=f"p{i}") for i in range(3)]
    for i in range(4):
        make_post(t, f"post{i}", tags=["news", f"t{i}"], status=PUBLISHED if i % 2 else 0)
    nav(t).SetMenu(
        navigation_pb2.SetMenuRequest(
            environment_id=t.env_id,
            menu=navigation_pb2.Menu(
                name="main", items=[navigation_pb2.MenuItem(label="P", page_id=pages[0].id)]
            ),
        )
    )
    session = chat(t).CreateSession(chat_pb2.CreateSessionRequest(site_id=t.site_id))
    for _ in range(3):
        chat(t).AppendMessages(
            chat_pb2.AppendMessagesRequest(
                session_id=session.id,
                messages=[
                    chat_pb2.Message(role=chat_pb2.MESSAGE_ROLE_USER, content=struct({"x": 1}))
                ],
            )
        )
    first_posts = posts(t).ListPosts(
        posts_pb2.ListPostsRequest(environment_id=t.env_id, page_size=1)
    )
    first_tagged = posts(t).ListPosts(
        posts_pb2.ListPostsRequest(environment_id=t.env_id, page_size=1, tag="news")
    )
    first_messages = chat(t).ListMessages(
        chat_pb2.ListMessagesRequest(session_id=session.id, page_size=1)
    )
    first_pages = t.client.pages.ListPages(
        pages_pb2.ListPagesRequest(environment_id=t.env_id, page_size=1)
    )

    env = t.env_id
    list_calls = [
        lambda: posts(t).ListPosts(posts_pb2.ListPostsRequest(environment_id=env)),
        lambda: posts(t).ListPosts(
            posts_pb2.ListPostsRequest(
                environment_id=env, page_size=1, page_token=first_posts.next_page_token
            )
        ),
        lambda: posts(t).ListPosts(
            posts_pb2.ListPostsRequest(environment_id=env, status=PUBLISHED)
        ),
        lambda: posts(t).ListPosts(
            posts_pb2.ListPostsRequest(
                environment_id=env, tag="news", page_size=1, page_token=first_tagged.next_page_token
            )
        ),
        lambda: posts(t).ListPosts(
            posts_pb2.ListPostsRequest(environment_id=env, tag="news", status=PUBLISHED)
        ),
        lambda: t.client.pages.ListPages(pages_pb2.ListPagesRequest(environment_id=env)),
        lambda: t.client.pages.ListPages(
            pages_pb2.ListPagesRequest(
                environment_id=env, page_size=1, page_token=first_pages.next_page_token
            )
        ),
        lambda: nav(t).ListMenus(navigation_pb2.ListMenusRequest(environment_id=env)),
        lambda: chat(t).ListSessions(chat_pb2.ListSessionsRequest(site_id=t.site_id)),
        lambda: chat(t).ListMessages(
            chat_pb2.ListMessagesRequest(
                session_id=session.id, page_size=1, page_token=first_messages.next_page_token
            )
        ),
    ]
    other_calls = [
        lambda: t.client.pages.GetPage(pages_pb2.GetPageRequest(id=pages[0].id)),
        lambda: t.client.pages.GetPageBySlug(
            pages_pb2.GetPageBySlugRequest(environment_id=env, slug="p1")
        ),
        lambda: t.client.pages.BatchCreatePages(
            pages_pb2.BatchCreatePagesRequest(
                environment_id=env,
                requests=[
                    pages_pb2.CreatePageRequest(
                        request_id=f"r{i}",
                        page=pages_pb2.Page(
                            slug=f"batch{i}",
                            title="Batch",
                            sections=[pages_pb2.Section(definition_id=hero.id)],
                        ),
                    )
                    for i in range(2)
                ],
            )
        ),
        lambda: posts(t).GetPostBySlug(
            posts_pb2.GetPostBySlugRequest(environment_id=env, slug="post1")
        ),
        lambda: nav(t).GetMenu(navigation_pb2.GetMenuRequest(environment_id=env, name="main")),
        lambda: chat(t).GetSession(chat_pb2.GetSessionRequest(id=session.id)),
        lambda: site_settings(t).GetSiteSettings(
            settings_pb2.GetSiteSettingsRequest(environment_id=env)
        ),
        lambda: site_settings(t).UpdateSiteSettings(
            settings_pb2.UpdateSiteSettingsRequest(
                site_settings=settings_pb2.SiteSettings(environment_id=env, theme="dark"),
                update_mask=field_mask_pb2.FieldMask(paths=["theme"]),
            )
        ),
        lambda: search(t, "page"),
        lambda: search(t, "post", kinds=[search_pb2.SEARCH_KIND_POST]),
        lambda: posts(t).UpdatePost(
            posts_pb2.UpdatePostRequest(
                post=posts_pb2.Post(id=first_posts.posts[0].id, tags=["x"]),
                update_mask=field_mask_pb2.FieldMask(paths=["tags"]),
            )
        ),
        lambda: clone_stub(t).CloneEnvironment(
            clone_pb2.CloneEnvironmentRequest(source_environment_id=env, name="copy")
        ),
    ]

    checked = 0
    for calls, ordered in ((list_calls, True), (other_calls, False)):
        for call in calls:
            with captured(content_server) as statements:
                call()
            assert statements
            for statement, parameters in statements:
                lines = plan(content_server, statement, parameters)
                assert not full_scans(lines), (statement, lines)
                if ordered:
                    assert not sorts(lines), (statement, lines)
                checked += 1
    assert checked > 40

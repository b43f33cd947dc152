"""Content is checked against its definition's schema before the write transaction opens: a
write that another process's writer keeps waiting is refused at once if its content is
invalid, and a definition changed between the check and the write is ABORTED, never stored
unchecked (validation.checked_first)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from loom.content.v1 import pages_pb2
from pysqlite3 import dbapi2 as sqlite3

from tests.content.tenants_and_pages import make_definition, make_page, make_tenant, struct
from tests.support import ContentServer, raises_status

# Only SQLite has a database-wide write lock for another process to hold.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


@contextmanager
def write_lock_held(server: ContentServer) -> Iterator[sqlite3.Connection]:
    """Another process's writer (its own connection) holding the database's write lock."""
    path = server.db.url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def test_invalid_content_is_refused_without_waiting_for_the_write_lock(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    page = make_page(t, hero.id, n_sections=1)
    bad = struct({"title": 5})  # the hero schema wants a string
    with write_lock_held(content_server):
        # Waiting for the lock would take the busy timeout (10 s): past these deadlines.
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            t.client.pages.CreatePage(
                pages_pb2.CreatePageRequest(
                    environment_id=t.env_id,
                    page=pages_pb2.Page(
                        slug="new",
                        title="New",
                        sections=[pages_pb2.Section(definition_id=hero.id, content=bad)],
                    ),
                ),
                timeout=3,
            )
        assert "page.sections[0].content.title" in err["fields"]
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            t.client.pages.UpdateSection(
                pages_pb2.UpdateSectionRequest(
                    page_id=page.id, section_id=page.sections[0].id, content=bad
                ),
                timeout=3,
            )
        assert "content.title" in err["fields"]
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT):
            t.client.pages.AddSection(
                pages_pb2.AddSectionRequest(
                    page_id=page.id, section=pages_pb2.Section(definition_id=hero.id, content=bad)
                ),
                timeout=3,
            )


def test_a_definition_changed_between_check_and_write_is_aborted_and_nothing_is_written(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    page = make_page(t, hero.id, n_sections=1)
    section_id = page.sections[0].id
    before = dict(t.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id)).sections[0].content)
    outcome: dict[str, object] = {}

    def update() -> None:
        try:
            t.client.pages.UpdateSection(
                pages_pb2.UpdateSectionRequest(
                    page_id=page.id, section_id=section_id, content=struct({"title": "Fresh"})
                ),
                timeout=20,
            )
            outcome["code"] = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            outcome["code"] = exc.code()
            outcome["details"] = exc.details()

    with write_lock_held(content_server) as other:
        call = threading.Thread(target=update)
        call.start()
        time.sleep(1.0)  # the call has checked its content and waits for the lock
        # Meanwhile the other writer makes "title" an integer: "Fresh" is no longer valid.
        schema = {"type": "object", "properties": {"title": {"type": "integer"}}}
        other.execute(
            "UPDATE section_definitions SET schema = ?, default_content = ? WHERE id = ?",
            (json.dumps(schema), json.dumps({"title": 1}), hero.id),
        )
        other.execute("COMMIT")
        call.join(timeout=30)
    assert outcome["code"] == grpc.StatusCode.ABORTED, outcome
    assert "changed while this write was being checked" in str(outcome["details"])
    after = t.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id))
    assert dict(after.sections[0].content) == before
    # Retried, the request is now checked against the new schema.
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT):
        t.client.pages.UpdateSection(
            pages_pb2.UpdateSectionRequest(
                page_id=page.id, section_id=section_id, content=struct({"title": "Fresh"})
            )
        )

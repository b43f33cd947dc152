"""A NUL character in a text field is refused as bad input on both backends (PostgreSQL
cannot store one), never an INTERNAL error, and nothing is written."""

from __future__ import annotations

import grpc
from loom.content.v1 import pages_pb2, tenancy_pb2

from tests.content.tenants_and_pages import make_tenant
from tests.support import ContentServer, raises_status


def test_nul_in_text_fields_is_invalid_argument(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as box:
        t.client.pages.CreatePage(
            pages_pb2.CreatePageRequest(
                environment_id=t.env_id, page=pages_pb2.Page(slug="home", title="Ho\x00me")
            )
        )
    assert box["fields"] == ["page.title"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as box:
        content_server.admin.tenancy.CreateTeam(
            tenancy_pb2.CreateTeamRequest(team=tenancy_pb2.Team(name="\x00"))
        )
    assert box["fields"] == ["team.name"]
    listed = t.client.pages.ListPages(pages_pb2.ListPagesRequest(environment_id=t.env_id))
    assert list(listed.pages) == []

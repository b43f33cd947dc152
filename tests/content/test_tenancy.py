from __future__ import annotations

import grpc
from loom.content.v1 import pages_pb2, tenancy_pb2

from tests.content.tenants_and_pages import make_definition, make_page, make_tenant
from tests.support import SERVICE_TOKEN, ContentServer, raises_status


def test_only_admin_creates_teams(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    with raises_status(grpc.StatusCode.PERMISSION_DENIED):
        t.client.tenancy.CreateTeam(tenancy_pb2.CreateTeamRequest(team=tenancy_pb2.Team(name="x")))


def test_missing_unknown_and_revoked_keys_are_unauthenticated_with_one_message(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    keys = content_server.admin.tenancy.ListApiKeys(
        tenancy_pb2.ListApiKeysRequest(team_id=t.team_id)
    )
    content_server.admin.tenancy.RevokeApiKey(
        tenancy_pb2.RevokeApiKeyRequest(id=keys.api_keys[0].id)
    )
    messages = set()
    for key in [None, "loom_not-a-real-key", t.key]:
        with raises_status(grpc.StatusCode.UNAUTHENTICATED) as err:
            content_server.client(key).tenancy.GetSite(tenancy_pb2.GetSiteRequest(id=t.site_id))
        messages.add(err["message"])
    assert len(messages) == 1


def test_key_secret_is_shown_once_and_stored_hashed(content_server: ContentServer) -> None:
    from sqlalchemy import text

    t = make_tenant(content_server.admin)
    listed = t.client.tenancy.ListApiKeys(tenancy_pb2.ListApiKeysRequest(team_id=t.team_id))
    assert len(listed.api_keys) == 1
    assert t.key.startswith(listed.api_keys[0].prefix)
    with content_server.db.read() as s:
        stored = [r[0] for r in s.execute(text("select key_hash from api_keys"))]
    assert t.key not in stored
    assert all(len(h) == 64 for h in stored)


def test_another_teams_resources_are_not_found(content_server: ContentServer) -> None:
    a = make_tenant(content_server.admin, "a")
    b = make_tenant(content_server.admin, "b")
    hero = make_definition(a)
    page = make_page(a, hero.id)
    calls = [
        lambda: b.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id)),
        lambda: b.client.pages.GetPageBySlug(
            pages_pb2.GetPageBySlugRequest(environment_id=a.env_id, slug="home")
        ),
        lambda: b.client.pages.ListPages(pages_pb2.ListPagesRequest(environment_id=a.env_id)),
        lambda: b.client.pages.DeletePage(pages_pb2.DeletePageRequest(id=page.id)),
        lambda: b.client.pages.GetSectionDefinition(
            pages_pb2.GetSectionDefinitionRequest(id=hero.id)
        ),
        lambda: b.client.pages.RemoveSection(
            pages_pb2.RemoveSectionRequest(page_id=page.id, section_id=page.sections[0].id)
        ),
        lambda: b.client.tenancy.GetSite(tenancy_pb2.GetSiteRequest(id=a.site_id)),
        lambda: b.client.tenancy.GetEnvironment(tenancy_pb2.GetEnvironmentRequest(id=a.env_id)),
        lambda: b.client.tenancy.GetTeam(tenancy_pb2.GetTeamRequest(id=a.team_id)),
        lambda: b.client.tenancy.CreateEnvironment(
            tenancy_pb2.CreateEnvironmentRequest(
                site_id=a.site_id, environment=tenancy_pb2.Environment(name="x")
            )
        ),
    ]
    for call in calls:
        with raises_status(grpc.StatusCode.NOT_FOUND) as other:
            call()
        assert "not found" in other["message"]
    # Indistinguishable from a resource that does not exist at all.
    with raises_status(grpc.StatusCode.NOT_FOUND) as missing:
        b.client.pages.GetPage(pages_pb2.GetPageRequest(id="01zzzzzzzzzzzzzzzzzzzzzzzz"))
    assert missing["reason"] == "NOT_FOUND"
    assert a.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id)).id == page.id


def test_team_lists_show_only_own_data(content_server: ContentServer) -> None:
    a = make_tenant(content_server.admin, "a")
    b = make_tenant(content_server.admin, "b")
    assert [t.id for t in b.client.tenancy.ListTeams(tenancy_pb2.ListTeamsRequest()).teams] == [
        b.team_id
    ]
    assert [s.id for s in b.client.tenancy.ListSites(tenancy_pb2.ListSitesRequest()).sites] == [
        b.site_id
    ]
    with raises_status(grpc.StatusCode.PERMISSION_DENIED):
        b.client.tenancy.ListSites(tenancy_pb2.ListSitesRequest(team_id=a.team_id))


def test_environment_names_unique_per_site(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    with raises_status(grpc.StatusCode.ALREADY_EXISTS):
        t.client.tenancy.CreateEnvironment(
            tenancy_pb2.CreateEnvironmentRequest(
                site_id=t.site_id, environment=tenancy_pb2.Environment(name="dev")
            )
        )
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        t.client.tenancy.CreateEnvironment(
            tenancy_pb2.CreateEnvironmentRequest(
                site_id=t.site_id, environment=tenancy_pb2.Environment(name="Prod!")
            )
        )
    assert err["fields"] == ["environment.name"]


def test_resolve_api_key_is_for_services_only(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    with raises_status(grpc.StatusCode.PERMISSION_DENIED):
        t.client.tenancy.ResolveApiKey(tenancy_pb2.ResolveApiKeyRequest(secret=t.key))
    service = content_server.client(SERVICE_TOKEN)
    resolved = service.tenancy.ResolveApiKey(tenancy_pb2.ResolveApiKeyRequest(secret=t.key))
    assert resolved.team_id == t.team_id
    with raises_status(grpc.StatusCode.NOT_FOUND):
        service.tenancy.ResolveApiKey(tenancy_pb2.ResolveApiKeyRequest(secret="nope"))


def test_delete_site_removes_its_environments_and_pages(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    hero = make_definition(t)
    page = make_page(t, hero.id)
    t.client.tenancy.DeleteSite(tenancy_pb2.DeleteSiteRequest(id=t.site_id))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        t.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        t.client.tenancy.GetEnvironment(tenancy_pb2.GetEnvironmentRequest(id=t.env_id))

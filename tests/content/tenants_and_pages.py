"""Builders for the common setup: a tenant (a team with a key, a site, an environment), section
definitions and pages, and `struct` for their JSON content."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2
from loom.content.v1 import pages_pb2, tenancy_pb2

from tests.support import Clients


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


@dataclass
class Tenant:
    team_id: str
    key: str
    site_id: str
    env_id: str
    client: Clients


def make_tenant(admin: Clients, name: str = "acme") -> Tenant:
    team = admin.tenancy.CreateTeam(tenancy_pb2.CreateTeamRequest(team=tenancy_pb2.Team(name=name)))
    key = admin.tenancy.CreateApiKey(tenancy_pb2.CreateApiKeyRequest(team_id=team.id, name="test"))
    client = admin.as_key(key.secret)
    site = client.tenancy.CreateSite(
        tenancy_pb2.CreateSiteRequest(site=tenancy_pb2.Site(name=f"{name} site"))
    )
    env = client.tenancy.CreateEnvironment(
        tenancy_pb2.CreateEnvironmentRequest(
            site_id=site.id, environment=tenancy_pb2.Environment(name="dev")
        )
    )
    return Tenant(team.id, key.secret, site.id, env.id, client)


HERO_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string", "minLength": 1}, "subtitle": {"type": "string"}},
    "required": ["title"],
    "additionalProperties": False,
}


def make_definition(
    t: Tenant, name: str = "hero", schema: dict[str, Any] | None = None
) -> pages_pb2.SectionDefinition:
    return t.client.pages.CreateSectionDefinition(
        pages_pb2.CreateSectionDefinitionRequest(
            environment_id=t.env_id,
            section_definition=pages_pb2.SectionDefinition(
                name=name,
                schema=struct(schema or HERO_SCHEMA),
                default_content=struct({"title": "Welcome"}),
            ),
        )
    )


def make_page(
    t: Tenant, definition_id: str, slug: str = "home", n_sections: int = 2, request_id: str = ""
) -> pages_pb2.Page:
    """`request_id`: sent as the call's x-request-id (the server makes one otherwise)."""
    call: dict[str, Any] = {}
    if request_id:
        call["metadata"] = (("authorization", f"Bearer {t.key}"), ("x-request-id", request_id))
    return t.client.pages.CreatePage(
        pages_pb2.CreatePageRequest(
            environment_id=t.env_id,
            page=pages_pb2.Page(
                slug=slug,
                title=f"Page {slug}",
                sections=[
                    pages_pb2.Section(
                        definition_id=definition_id, content=struct({"title": f"Section {i}"})
                    )
                    for i in range(n_sections)
                ],
            ),
        ),
        **call,
    )

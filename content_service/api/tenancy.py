"""TenancyService: teams, API keys, sites, environments."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2
from loom.content.v1 import tenancy_pb2, tenancy_pb2_grpc

from content_service import authn, tenancy
from content_service.api.common import mask_paths
from content_service.api.convert import ts
from content_service.db import models
from content_service.db.engine import Database
from servicekit.auth import UNAUTHENTICATED_MESSAGE, current_principal, require_service
from servicekit.errors import NotFound, invalid
from servicekit.pagination import page_of, page_request


def team_proto(row: models.Team) -> tenancy_pb2.Team:
    return tenancy_pb2.Team(id=row.id, name=row.name, create_time=ts(row.created_at))


def key_proto(row: models.ApiKey) -> tenancy_pb2.ApiKey:
    return tenancy_pb2.ApiKey(
        id=row.id,
        team_id=row.team_id,
        name=row.name,
        prefix=row.prefix,
        create_time=ts(row.created_at),
        revoke_time=ts(row.revoked_at),
    )


def site_proto(row: models.Site) -> tenancy_pb2.Site:
    return tenancy_pb2.Site(
        id=row.id,
        team_id=row.team_id,
        name=row.name,
        create_time=ts(row.created_at),
        update_time=ts(row.updated_at),
    )


def env_proto(row: models.Environment) -> tenancy_pb2.Environment:
    return tenancy_pb2.Environment(
        id=row.id, site_id=row.site_id, name=row.name, create_time=ts(row.created_at)
    )


class TenancyServicer(tenancy_pb2_grpc.TenancyServiceServicer):
    def __init__(self, db: Database, keys: authn.KeyCache) -> None:
        self.db = db
        self.keys = keys  # the authenticator's: a key revoked here leaves it at once

    def CreateTeam(
        self, request: tenancy_pb2.CreateTeamRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.Team:
        with self.db.write() as s:
            return team_proto(tenancy.create_team(s, current_principal(), request.team.name))

    def GetTeam(
        self, request: tenancy_pb2.GetTeamRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.Team:
        with self.db.read() as s:
            return team_proto(tenancy.get_team(s, current_principal(), request.id))

    def ListTeams(
        self, request: tenancy_pb2.ListTeamsRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.ListTeamsResponse:
        page = page_request(request)
        with self.db.read() as s:
            items, token = page_of(
                tenancy.list_teams(s, current_principal(), page), page, lambda r: r.id, team_proto
            )
            return tenancy_pb2.ListTeamsResponse(teams=items, next_page_token=token)

    def CreateApiKey(
        self, request: tenancy_pb2.CreateApiKeyRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.CreateApiKeyResponse:
        with self.db.write() as s:
            key, secret = tenancy.create_api_key(
                s, current_principal(), request.team_id, request.name
            )
            return tenancy_pb2.CreateApiKeyResponse(api_key=key_proto(key), secret=secret)

    def ListApiKeys(
        self, request: tenancy_pb2.ListApiKeysRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.ListApiKeysResponse:
        page = page_request(request)
        with self.db.read() as s:
            items, token = page_of(
                tenancy.list_api_keys(s, current_principal(), request.team_id, page),
                page,
                lambda r: r.id,
                key_proto,
            )
            return tenancy_pb2.ListApiKeysResponse(api_keys=items, next_page_token=token)

    def RevokeApiKey(
        self, request: tenancy_pb2.RevokeApiKeyRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.ApiKey:
        with self.db.write() as s:
            answer = key_proto(tenancy.revoke_api_key(s, current_principal(), request.id))
        self.keys.forget_key(answer.id)  # committed: no lookup can cache it live again
        return answer

    def CreateSite(
        self, request: tenancy_pb2.CreateSiteRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.Site:
        with self.db.write() as s:
            return site_proto(
                tenancy.create_site(s, current_principal(), request.team_id, request.site.name)
            )

    def GetSite(
        self, request: tenancy_pb2.GetSiteRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.Site:
        from content_service import scope

        with self.db.read() as s:
            return site_proto(scope.site(s, current_principal(), request.id, "id"))

    def ListSites(
        self, request: tenancy_pb2.ListSitesRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.ListSitesResponse:
        page = page_request(request)
        with self.db.read() as s:
            items, token = page_of(
                tenancy.list_sites(s, current_principal(), request.team_id, page),
                page,
                lambda r: r.id,
                site_proto,
            )
            return tenancy_pb2.ListSitesResponse(sites=items, next_page_token=token)

    def UpdateSite(
        self, request: tenancy_pb2.UpdateSiteRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.Site:
        paths = mask_paths(request.update_mask, {"name"})
        with self.db.write() as s:
            site = tenancy.update_site(
                s,
                current_principal(),
                request.site.id,
                request.site.name if "name" in paths else None,
            )
            return site_proto(site)

    def DeleteSite(
        self, request: tenancy_pb2.DeleteSiteRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        with self.db.write() as s:
            tenancy.delete_site(s, current_principal(), request.id)
        return empty_pb2.Empty()

    def CreateEnvironment(
        self, request: tenancy_pb2.CreateEnvironmentRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.Environment:
        with self.db.write() as s:
            return env_proto(
                tenancy.create_environment(
                    s, current_principal(), request.site_id, request.environment.name
                )
            )

    def GetEnvironment(
        self, request: tenancy_pb2.GetEnvironmentRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.Environment:
        with self.db.read() as s:
            return env_proto(tenancy.get_environment(s, current_principal(), request.id))

    def ListEnvironments(
        self, request: tenancy_pb2.ListEnvironmentsRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.ListEnvironmentsResponse:
        page = page_request(request)
        with self.db.read() as s:
            items, token = page_of(
                tenancy.list_environments(s, current_principal(), request.site_id, page),
                page,
                lambda r: r.id,
                env_proto,
            )
            return tenancy_pb2.ListEnvironmentsResponse(environments=items, next_page_token=token)

    def DeleteEnvironment(
        self, request: tenancy_pb2.DeleteEnvironmentRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        with self.db.write() as s:
            tenancy.delete_environment(s, current_principal(), request.id)
        return empty_pb2.Empty()

    def ResolveApiKey(
        self, request: tenancy_pb2.ResolveApiKeyRequest, context: grpc.ServicerContext
    ) -> tenancy_pb2.ResolveApiKeyResponse:
        require_service(current_principal())
        if not request.secret:
            raise invalid("secret", "is required")
        key = authn.team_key(self.db, request.secret)
        if key is None or key.team_id is None or key.key_id is None:
            raise NotFound("api key", UNAUTHENTICATED_MESSAGE)
        return tenancy_pb2.ResolveApiKeyResponse(team_id=key.team_id, api_key_id=key.key_id)

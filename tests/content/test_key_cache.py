"""The team-key cache (content_service/authn.py): a key's lookup is reused for
CONTENT_AUTH_CACHE_SECONDS, a key revoked through this process stops at once, one revoked
through another replica stops within that bound."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from loom.content.v1 import tenancy_pb2

from content_service.db.raw import RawSelect
from tests.content.tenants_and_pages import Tenant, make_tenant
from tests.support import (
    Clients,
    ContentServer,
    ContentServerFactory,
    raises_status,
    wait_until,
)


def get_site(clients: Clients, t: Tenant) -> Any:
    return clients.as_key(t.key).tenancy.GetSite(tenancy_pb2.GetSiteRequest(id=t.site_id))


def revoke(server: ContentServer, t: Tenant) -> None:
    keys = server.admin.tenancy.ListApiKeys(tenancy_pb2.ListApiKeysRequest(team_id=t.team_id))
    server.admin.tenancy.RevokeApiKey(tenancy_pb2.RevokeApiKeyRequest(id=keys.api_keys[0].id))


@contextmanager
def key_lookups() -> Iterator[list[str]]:
    """The SQL of every raw statement run meanwhile that reads api_keys."""
    seen: list[str] = []

    def observe(sql: str, _params: Any) -> None:
        if "api_keys" in sql:
            seen.append(sql)

    RawSelect.observers.append(observe)
    try:
        yield seen
    finally:
        RawSelect.observers.remove(observe)


def test_a_key_is_looked_up_once_and_an_unknown_one_too(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    with key_lookups() as lookups:
        for _ in range(5):
            get_site(content_server.client(None), t)
        assert len(lookups) <= 1  # make_tenant's own calls may have cached it already
        for _ in range(5):
            with raises_status(grpc.StatusCode.UNAUTHENTICATED):
                content_server.client("loom_no-such-key").tenancy.GetSite(
                    tenancy_pb2.GetSiteRequest(id=t.site_id)
                )
        assert len(lookups) <= 2


def test_a_key_revoked_through_this_process_stops_at_once(
    content_server: ContentServer,
) -> None:
    t = make_tenant(content_server.admin)
    get_site(content_server.client(None), t)  # cached now
    revoke(content_server, t)
    with raises_status(grpc.StatusCode.UNAUTHENTICATED):
        get_site(content_server.client(None), t)


def test_a_key_revoked_on_another_replica_stops_within_the_bound(
    content_server: ContentServer, content_servers: ContentServerFactory
) -> None:
    t = make_tenant(content_server.admin)
    # A second content_service on the same database, with its own key cache.
    other = content_servers(auth_cache_seconds=1.0).client(None)
    get_site(other, t)  # cached there
    revoke(content_server, t)
    get_site(other, t)  # the documented staleness: still served from its cache

    def refused() -> bool:
        try:
            get_site(other, t)
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNAUTHENTICATED
        return False

    wait_until(refused, timeout=1.0 + 2.0, what="the replica to refuse the revoked key")


def test_with_the_cache_off_a_revocation_elsewhere_stops_at_once(
    content_server: ContentServer, content_servers: ContentServerFactory
) -> None:
    t = make_tenant(content_server.admin)
    other = content_servers(auth_cache_seconds=0).client(None)
    get_site(other, t)
    revoke(content_server, t)
    with raises_status(grpc.StatusCode.UNAUTHENTICATED):
        get_site(other, t)

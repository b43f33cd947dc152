"""Who may call vector_service.

- The service token (our own processes) may call everything, in any scope.
- A tenant API key may call Search and EmbedTexts only, and only in its own team. vector_service
  holds no keys: it asks content_service (TenancyService/ResolveApiKey, with the service token)
  and caches the answer briefly, negative answers too.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc
from loom.content.v1 import tenancy_pb2, tenancy_pb2_grpc

from servicekit.auth import UNAUTHENTICATED_MESSAGE, Principal, Role, hash_secret, same_secret
from servicekit.clients import Retry, open_channel
from servicekit.errors import ServiceError, Unauthenticated, Unavailable

log = logging.getLogger(__name__)

SERVICE = Principal(role=Role.SERVICE)
MAX_CACHED_KEYS = 10_000

# The channel retries UNAVAILABLE, within the call's deadline, with backoff.
_RETRY = Retry(
    methods=[("loom.content.v1.TenancyService", "ResolveApiKey")],
    max_attempts=3,
    initial_backoff_seconds=0.05,
    max_backoff_seconds=0.5,
)


class TenancyClient:
    """vector_service's client of content_service: ResolveApiKey, on a servicekit.clients
    channel (the service token and the deadline `timeout` on every call)."""

    def __init__(self, address: str, service_token: str, *, timeout: float) -> None:
        self.address = address
        self._channel = open_channel(address, service_token, timeout=timeout, retry=_RETRY)
        self._stub = tenancy_pb2_grpc.TenancyServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def resolve_api_key(self, secret: str) -> tenancy_pb2.ResolveApiKeyResponse:
        answer: tenancy_pb2.ResolveApiKeyResponse = self._stub.ResolveApiKey(
            tenancy_pb2.ResolveApiKeyRequest(secret=secret)
        )
        return answer


class TenantKeyResolver:
    """Resolves a tenant's API key to its team through content_service, with a small TTL cache.

    The cache is keyed by the secret's sha256, so no secret is kept in memory. A revoked key
    keeps working for at most `ttl` seconds; an unknown key is asked about again after
    `negative_ttl` seconds (so a just-created key works quickly)."""

    def __init__(
        self, content: TenancyClient, *, ttl: float = 30.0, negative_ttl: float = 5.0
    ) -> None:
        self._content = content
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._content.close()

    def _cached(self, digest: str) -> tuple[bool, Principal | None]:
        with self._lock:
            entry = self._cache.get(digest)
            if entry is None:
                return False, None
            if entry[0] <= time.monotonic():
                del self._cache[digest]
                return False, None
            return True, entry[1]

    def _remember(self, digest: str, principal: Principal | None) -> None:
        ttl = self._ttl if principal is not None else self._negative_ttl
        if ttl <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._cache) >= MAX_CACHED_KEYS:
                for key in [k for k, (expiry, _) in self._cache.items() if expiry <= now]:
                    del self._cache[key]
                while len(self._cache) >= MAX_CACHED_KEYS:
                    del self._cache[next(iter(self._cache))]  # oldest first
            self._cache[digest] = (now + ttl, principal)

    def resolve(self, secret: str) -> Principal:
        digest = hash_secret(secret)
        hit, principal = self._cached(digest)
        if not hit:
            principal = self._ask(secret)
            self._remember(digest, principal)
        if principal is None:
            raise Unauthenticated(UNAUTHENTICATED_MESSAGE)
        return principal

    def _ask(self, secret: str) -> Principal | None:
        try:
            answer = self._content.resolve_api_key(secret)
        except grpc.RpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                log.warning(
                    "content_service at %s unreachable: %s", self._content.address, code.name
                )
                raise Unavailable(
                    f"cannot check the API key: content_service ({self._content.address}) is "
                    "unavailable; retry later",
                    reason="AUTH_UNAVAILABLE",
                ) from exc
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                log.error(
                    "content_service at %s rejected our service token (%s): "
                    "LOOM_SERVICE_TOKEN differs between the services",
                    self._content.address,
                    code.name,
                )
                raise ServiceError(
                    "vector_service cannot check API keys: content_service rejected its "
                    "service token (LOOM_SERVICE_TOKEN must be the same for both services)",
                    reason="SERVICE_TOKEN_REJECTED",
                ) from exc
            log.error("ResolveApiKey failed: %s %s", code, exc.details())
            raise Unavailable(
                "cannot check the API key right now; retry later", reason="AUTH_UNAVAILABLE"
            ) from exc
        if not answer.team_id:
            return None
        return Principal(role=Role.TEAM, team_id=answer.team_id, key_id=answer.api_key_id)


class VectorAuthenticator:
    """servicekit.edge calls this with the bearer secret of every call (health and reflection
    aside)."""

    def __init__(self, service_token: str, tenants: TenantKeyResolver) -> None:
        self._service_token = service_token
        self._tenants = tenants

    def __call__(self, secret: str | None) -> Principal:
        if not secret:
            raise Unauthenticated(UNAUTHENTICATED_MESSAGE)
        if same_secret(secret, self._service_token):
            return SERVICE
        return self._tenants.resolve(secret)

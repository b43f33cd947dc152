"""Resolves a bearer secret to a principal: the admin key, the service token, or a team key.

Team keys are looked up in the database once and then kept in a small in-process cache
(KeyCache) for CONTENT_AUTH_CACHE_SECONDS: the lookup was about a third of a small
authenticated read. The staleness is bounded and documented: a key revoked through this
process stops working at once (RevokeApiKey drops it from the cache after its commit); one
revoked through another replica works here for at most that many seconds more."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, select

from content_service.db.engine import Database
from content_service.db.models import ApiKey
from content_service.db.raw import RawSelect
from servicekit.auth import (
    UNAUTHENTICATED_MESSAGE,
    Principal,
    Role,
    hash_secret,
    same_secret,
)
from servicekit.errors import Unauthenticated

_ADMIN = Principal(role=Role.ADMIN)
# On the driver's cursor (db.raw): every call with a team key runs it.
_KEY_BY_HASH = RawSelect(
    select(ApiKey.id, ApiKey.team_id, ApiKey.revoked_at).where(
        ApiKey.key_hash == bindparam("key_hash")
    )
)
_SERVICE = Principal(role=Role.SERVICE)


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal | None  # None: no live key has this secret
    expires: float  # time.monotonic()


class KeyCache:
    """Team-key answers by secret hash, for `seconds` each (0 turns caching off). Unknown
    secrets are cached too: a secret is random, so an unknown one never becomes a key, and a
    flood of wrong keys then costs no database reads. Holds at most MAX_ENTRIES answers; when
    full it starts again empty (O(1), and only a flood of distinct secrets fills it)."""

    MAX_ENTRIES = 10_000

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def get(self, key_hash: str) -> _Entry | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry.expires <= time.monotonic():
            return None
        return entry

    def put(self, key_hash: str, principal: Principal | None) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key_hash] = _Entry(principal, time.monotonic() + self.seconds)

    def forget_key(self, key_id: str) -> None:
        """Drops a key's answers (it was revoked here): call after the revoke committed, so no
        lookup can put the unrevoked key back."""
        with self._lock:
            for key_hash, entry in list(self._entries.items()):
                if entry.principal is not None and entry.principal.key_id == key_id:
                    del self._entries[key_hash]


class ContentAuthenticator:
    def __init__(
        self, db: Database, admin_key: str, service_token: str, keys: KeyCache | None = None
    ) -> None:
        self._db = db
        self._admin_key = admin_key
        self._service_token = service_token
        self._keys = keys or KeyCache(0)

    def __call__(self, secret: str | None) -> Principal:
        if not secret:
            raise Unauthenticated(UNAUTHENTICATED_MESSAGE)
        if same_secret(secret, self._admin_key):
            return _ADMIN
        if same_secret(secret, self._service_token):
            return _SERVICE
        key_hash = hash_secret(secret)
        cached = self._keys.get(key_hash)
        if cached is not None:
            principal = cached.principal
        else:
            principal = _lookup(self._db, key_hash)
            self._keys.put(key_hash, principal)
        if principal is None:
            raise Unauthenticated(UNAUTHENTICATED_MESSAGE)
        return principal


def team_key(db: Database, secret: str) -> Principal | None:
    """The team principal of a live API key's secret, read from the database (never cached:
    ResolveApiKey answers other services, which cache on their own); None for an unknown or
    revoked one (alike)."""
    return _lookup(db, hash_secret(secret))


def _lookup(db: Database, key_hash: str) -> Principal | None:
    """The one key lookup: every call's authentication and ResolveApiKey."""
    # One select on the unique hash index: no ORM identity map on the hot path.
    with db.read_statement() as conn:
        rows = _KEY_BY_HASH.all(conn, {"key_hash": key_hash})
    row = rows[0] if rows else None
    if row is None or row.revoked_at is not None:
        return None
    return Principal(role=Role.TEAM, team_id=row.team_id, key_id=row.id)

"""Resolves a bearer secret to a principal: the admin key, the service token, or a team key."""

from __future__ import annotations

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


class ContentAuthenticator:
    def __init__(self, db: Database, admin_key: str, service_token: str) -> None:
        self._db = db
        self._admin_key = admin_key
        self._service_token = service_token

    def __call__(self, secret: str | None) -> Principal:
        if not secret:
            raise Unauthenticated(UNAUTHENTICATED_MESSAGE)
        if same_secret(secret, self._admin_key):
            return _ADMIN
        if same_secret(secret, self._service_token):
            return _SERVICE
        principal = team_key(self._db, secret)
        if principal is None:
            raise Unauthenticated(UNAUTHENTICATED_MESSAGE)
        return principal


def team_key(db: Database, secret: str) -> Principal | None:
    """The team principal of a live API key's secret; None for an unknown or revoked one
    (alike). The one key lookup: every call's authentication and ResolveApiKey."""
    # One select on the unique hash index: no ORM identity map on the hot path.
    with db.read_statement() as conn:
        rows = _KEY_BY_HASH.all(conn, {"key_hash": hash_secret(secret)})
    row = rows[0] if rows else None
    if row is None or row.revoked_at is not None:
        return None
    return Principal(role=Role.TEAM, team_id=row.team_id, key_id=row.id)

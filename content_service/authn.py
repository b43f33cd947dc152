"""Resolves a bearer secret to a principal: the admin key, the service token, or a team key."""

from __future__ import annotations

from sqlalchemy import bindparam, select

from content_service.db.engine import Database
from content_service.db.models import ApiKey
from servicekit.auth import (
    UNAUTHENTICATED_MESSAGE,
    Principal,
    Role,
    hash_secret,
    same_secret,
)
from servicekit.errors import Unauthenticated

_ADMIN = Principal(role=Role.ADMIN)
_KEY_BY_HASH = select(ApiKey.id, ApiKey.team_id, ApiKey.revoked_at).where(
    ApiKey.key_hash == bindparam("key_hash")
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
        # Core select on the unique hash index: no ORM identity map on the hot path.
        with self._db.read_statement() as conn:
            row = conn.execute(_KEY_BY_HASH, {"key_hash": hash_secret(secret)}).first()
        if row is None or row.revoked_at is not None:
            raise Unauthenticated(UNAUTHENTICATED_MESSAGE)
        return Principal(role=Role.TEAM, team_id=row.team_id, key_id=row.id)

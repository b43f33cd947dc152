"""The caller's identity, resolved once per call by the edge interceptor.

Servicers and the data layer read `current_principal()`; none of them reads metadata."""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from servicekit.errors import PermissionDenied, Unauthenticated


class Role(Enum):
    ADMIN = "admin"  # the bootstrap key: creates teams and their first keys
    SERVICE = "service"  # our own processes, with the shared service token
    TEAM = "team"  # a tenant's API key


@dataclass(frozen=True)
class Principal:
    role: Role
    team_id: str | None = None
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def is_service(self) -> bool:
        return self.role is Role.SERVICE

    # Which teams a caller may see: the one rule, used by every service's data layer.

    @property
    def sees_every_team(self) -> bool:
        return self.role is not Role.TEAM

    @property
    def visible_team(self) -> str | None:
        """The one team whose resources this caller sees; None: every team."""
        return None if self.sees_every_team else self.team_id

    def can_see(self, team_id: str) -> bool:
        return self.sees_every_team or self.team_id == team_id

    def team_for(self, requested: str, action: str) -> str:
        """The team a call that names one (`requested`, maybe empty) acts on: the admin key
        and the service token any named team ('' stays ''); a team key its own (empty means
        it; another team is PERMISSION_DENIED, "a team key can only <action> its own team")."""
        if self.sees_every_team:
            return requested
        if self.team_id is None:
            raise PermissionDenied("this key belongs to no team")
        if requested and requested != self.team_id:
            raise PermissionDenied(f"a team key can only {action} its own team")
        return self.team_id


# One message for a missing, unknown and revoked key: a caller learns nothing about which.
UNAUTHENTICATED_MESSAGE = "missing, unknown or revoked API key (send `authorization: Bearer <key>`)"

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)

Authenticator = Callable[[str | None], Principal]


def current_principal() -> Principal:
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated(UNAUTHENTICATED_MESSAGE)
    return principal


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _principal.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    _principal.reset(token)


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDenied("this call needs the admin key")


def require_service(principal: Principal) -> None:
    if not (principal.is_service or principal.is_admin):
        raise PermissionDenied("this call is for our own services (service token)")


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def hash_secret(secret: str) -> str:
    # Keys are 256-bit random: a fast hash is enough, and lookups by hash are indexed.
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def load_or_create_secret(path: Path, prefix: str) -> tuple[str, bool]:
    """Reads a secret file, or creates it with 0600 permissions. Returns (secret, created).

    Safe when several processes start at once: the file appears atomically (hard link of a
    complete temp file) and whoever loses the race reads the winner's secret."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    with tmp.open("x") as fh:
        tmp.chmod(0o600)
        fh.write(new_secret(prefix) + "\n")
    try:
        os.link(tmp, path)
        created = True
    except FileExistsError:
        created = False
    finally:
        tmp.unlink()
    return path.read_text().strip(), created

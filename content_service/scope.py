"""Tenant scope: every read and write resolves its parent through these, filtered by the
caller's team. Another team's resource is NotFound, exactly like a missing one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from content_service.db.models import Environment, Image, Page, Post, SectionDefinition, Site
from servicekit.auth import Principal
from servicekit.errors import NotFound, invalid


@dataclass(frozen=True)
class EnvScope:
    team_id: str
    site_id: str
    environment_id: str


def require_id(value: str, field: str) -> str:
    if not value:
        raise invalid(field, "is required")
    if not valid_id(value):
        raise invalid(field, "is not a valid id")
    return value


def valid_id(value: str) -> bool:
    """Could be one of our ids: at most 64 printable ASCII characters (ours are ULIDs), so
    nothing else (NUL, which PostgreSQL cannot even compare) reaches a query."""
    return len(value) <= 64 and value.isascii() and value.isprintable()


def environment(
    session: Session, principal: Principal, environment_id: str, field: str = "environment_id"
) -> EnvScope:
    require_id(environment_id, field)
    found = lookup(session, environment_id, principal.visible_team)
    if found is None:
        raise NotFound("environment", environment_id)
    return found


def lookup(session: Session, environment_id: str, team_id: str | None = None) -> EnvScope | None:
    """The scope of an environment (only within `team_id` when given); None when absent."""
    stmt = (
        select(Site.team_id, Environment.site_id)
        .join(Site, Site.id == Environment.site_id)
        .where(Environment.id == environment_id)
    )
    if team_id is not None:
        stmt = stmt.where(Site.team_id == team_id)
    row = session.execute(stmt).first()
    if row is None:
        return None
    return EnvScope(team_id=row[0], site_id=row[1], environment_id=environment_id)


# The rows that live in an environment and are fetched by id.
EnvRow = TypeVar("EnvRow", Page, Post, SectionDefinition, Image)


def in_environment(
    session: Session,
    principal: Principal,
    model: type[EnvRow],
    row_id: str,
    what: str,
    field: str = "id",
    *,
    lock: bool = False,
) -> tuple[EnvRow, EnvScope]:
    """A row by id and the scope of its environment; NotFound(what) when the row is missing or
    belongs to another team. `lock`: SELECT ... FOR UPDATE (PostgreSQL: concurrent writers of
    the row queue here; SQLite ignores it, BEGIN IMMEDIATE already serializes writers)."""
    require_id(row_id, field)
    if lock:
        row = session.scalars(select(model).where(model.id == row_id).with_for_update()).first()
    else:
        row = session.get(model, row_id)
    if row is None:
        raise NotFound(what, row_id)
    try:
        env = environment(session, principal, row.environment_id)
    except NotFound:
        raise NotFound(what, row_id) from None
    return row, env


def site(session: Session, principal: Principal, site_id: str, field: str = "site_id") -> Site:
    require_id(site_id, field)
    found = session.get(Site, site_id)
    if found is None or not principal.can_see(found.team_id):
        raise NotFound("site", site_id)
    return found


def team_for_write(principal: Principal, requested: str, field: str = "team_id") -> str:
    """The team a create acts on: the key's own team, or (admin/service) the named one."""
    team_id = principal.team_for(requested, "act on")
    if not team_id:
        raise invalid(field, "is required with the admin key")
    return team_id

"""Teams, API keys, sites and environments: plain functions over a session."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from content_service import indexing, scope, validation
from content_service.db.models import ApiKey, Environment, Site, Team
from content_service.db.values import now
from servicekit.auth import Principal, hash_secret, new_secret, require_admin
from servicekit.errors import AlreadyExists, NotFound, PermissionDenied, shown
from servicekit.ids import new_id
from servicekit.pagination import PageRequest

KEY_PREFIX = "loom"


def create_team(session: Session, principal: Principal, name: str) -> Team:
    require_admin(principal)
    team = Team(id=new_id(), name=validation.text(name, "team.name", max_len=200), created_at=now())
    session.add(team)
    return team


def get_team(session: Session, principal: Principal, team_id: str) -> Team:
    scope.require_id(team_id, "id")
    team = session.get(Team, team_id)
    if team is None or not principal.can_see(team.id):
        raise NotFound("team", team_id)
    return team


def list_teams(session: Session, principal: Principal, page: PageRequest) -> list[Team]:
    stmt = select(Team).order_by(Team.id).limit(page.size + 1)
    if principal.visible_team is not None:
        stmt = stmt.where(Team.id == principal.visible_team)
    if page.after:
        stmt = stmt.where(Team.id > page.after)
    return list(session.scalars(stmt))


def create_api_key(
    session: Session, principal: Principal, team_id: str, name: str
) -> tuple[ApiKey, str]:
    team = get_team(session, principal, scope.require_id(team_id, "team_id"))
    if not principal.is_admin and principal.team_id != team.id:
        raise PermissionDenied("a team key can only create keys for its own team")
    secret = new_secret(KEY_PREFIX)
    key = ApiKey(
        id=new_id(),
        team_id=team.id,
        name=validation.text(name, "name", max_len=200, required=False),
        prefix=secret[: len(KEY_PREFIX) + 7],
        key_hash=hash_secret(secret),
        created_at=now(),
        revoked_at=None,
    )
    session.add(key)
    return key, secret


def list_api_keys(
    session: Session, principal: Principal, team_id: str, page: PageRequest
) -> list[ApiKey]:
    team = get_team(session, principal, scope.require_id(team_id, "team_id"))
    stmt = select(ApiKey).where(ApiKey.team_id == team.id).order_by(ApiKey.id).limit(page.size + 1)
    if page.after:
        stmt = stmt.where(ApiKey.id > page.after)
    return list(session.scalars(stmt))


def revoke_api_key(session: Session, principal: Principal, key_id: str) -> ApiKey:
    scope.require_id(key_id, "id")
    key = session.get(ApiKey, key_id)
    if key is None or not principal.can_see(key.team_id):
        raise NotFound("api key", key_id)
    if key.revoked_at is None:
        key.revoked_at = now()
    return key


def create_site(session: Session, principal: Principal, team_id: str, name: str) -> Site:
    owner = scope.team_for_write(principal, team_id)
    get_team(session, principal, owner)
    ts = now()
    site = Site(
        id=new_id(),
        team_id=owner,
        name=validation.text(name, "site.name", max_len=200),
        created_at=ts,
        updated_at=ts,
    )
    session.add(site)
    return site


def list_sites(
    session: Session, principal: Principal, team_id: str, page: PageRequest
) -> list[Site]:
    owner = scope.team_for_write(principal, team_id)
    stmt = select(Site).where(Site.team_id == owner).order_by(Site.id).limit(page.size + 1)
    if page.after:
        stmt = stmt.where(Site.id > page.after)
    return list(session.scalars(stmt))


def update_site(session: Session, principal: Principal, site_id: str, name: str | None) -> Site:
    site = scope.site(session, principal, site_id, "site.id")
    if name is not None:
        site.name = validation.text(name, "site.name", max_len=200)
    site.updated_at = now()
    return site


def delete_site(session: Session, principal: Principal, site_id: str) -> None:
    site = scope.site(session, principal, site_id, "id")
    indexing.environments_deleted(
        session, session.scalars(select(Environment.id).where(Environment.site_id == site.id))
    )
    session.delete(site)


def create_environment(
    session: Session, principal: Principal, site_id: str, name: str
) -> Environment:
    site = scope.site(session, principal, site_id)
    message = f"site {site.id!r} already has an environment named {shown(name)}"
    env = Environment(
        id=new_id(),
        site_id=site.id,
        name=validation.environment_name(name, "environment.name"),
        created_at=now(),
    )
    session.add(env)
    try:
        session.flush()
    except IntegrityError as exc:
        raise AlreadyExists(message) from exc
    return env


def get_environment(session: Session, principal: Principal, environment_id: str) -> Environment:
    env_scope = scope.environment(session, principal, environment_id, "id")
    env = session.get(Environment, env_scope.environment_id)
    assert env is not None
    return env


def list_environments(
    session: Session, principal: Principal, site_id: str, page: PageRequest
) -> list[Environment]:
    site = scope.site(session, principal, site_id)
    stmt = (
        select(Environment)
        .where(Environment.site_id == site.id)
        .order_by(Environment.id)
        .limit(page.size + 1)
    )
    if page.after:
        stmt = stmt.where(Environment.id > page.after)
    return list(session.scalars(stmt))


def delete_environment(session: Session, principal: Principal, environment_id: str) -> None:
    env = get_environment(session, principal, environment_id)
    indexing.environments_deleted(session, [env.id])
    session.delete(env)

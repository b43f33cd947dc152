"""Navigation menus: named trees of items per environment, stored as JSON in navigation.items.

An item links to a page of the same environment (by id) or to a URL. Every page reference is
checked when the menu is set; a page deleted later leaves its items in place, and reads show
an empty page_slug for them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from content_service import scope, validation
from content_service.db.models import Navigation, Page
from content_service.db.values import dumps, now
from servicekit.auth import Principal
from servicekit.errors import Aborted, FieldViolation, InvalidArgument, NotFound, invalid, shown
from servicekit.ids import new_id
from servicekit.pagination import PageRequest

MAX_DEPTH = 4
MAX_ITEMS = 200
MAX_LABEL = 100
MAX_URL = 2_000
MAX_VIOLATIONS = 20
MAX_JSON_BYTES = 256 * 1024
_URL_CHARS = re.compile(r"^[^\s\x00-\x1f\x7f]+$")


@dataclass
class MenuItem:
    label: str
    page_id: str = ""
    url: str = ""
    children: list[MenuItem] = field(default_factory=list)
    visible: bool = True


@dataclass
class MenuView:
    """A menu row with its items and the current slug of every page they reference."""

    row: Navigation
    items: list[MenuItem]
    slugs: dict[str, str]


def check_url(url: str) -> str | None:
    """Why the URL is not acceptable, or None: http(s) with a host, mailto with an
    address, a path on the site ("/pricing", not "//host") or an anchor ("#faq")."""
    if len(url) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    if not _URL_CHARS.match(url):
        return "must not contain spaces or control characters"
    if url.startswith("#"):
        return None
    if url.startswith("/"):
        return "must be a path on the site (not //host)" if url.startswith("//") else None
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None if parts.hostname else "needs a host (https://example.com/...)"
    if scheme == "mailto":
        return None if parts.path else "needs an address (mailto:someone@example.com)"
    return "must be an http(s) or mailto URL, a path starting with / or an anchor (#...)"


def _check_items(items: list[MenuItem]) -> dict[str, list[str]]:
    """Validates the tree; returns the paths of every page reference, by page id."""
    violations: list[FieldViolation] = []
    refs: dict[str, list[str]] = {}
    count = 0

    def walk(level: list[MenuItem], path: str, depth: int) -> None:
        nonlocal count
        if level and depth > MAX_DEPTH:
            violations.append(FieldViolation(path, f"menus nest at most {MAX_DEPTH} levels"))
            return
        for i, item in enumerate(level):
            here = f"{path}[{i}]"
            count += 1
            if not item.label.strip():
                violations.append(FieldViolation(f"{here}.label", "is required"))
            elif len(item.label) > MAX_LABEL or "\x00" in item.label:
                violations.append(
                    FieldViolation(
                        f"{here}.label", f"must be 1-{MAX_LABEL} characters, without NUL"
                    )
                )
            if item.page_id:
                if not scope.valid_id(item.page_id):
                    violations.append(FieldViolation(f"{here}.page_id", "is not a valid id"))
                else:
                    refs.setdefault(item.page_id, []).append(f"{here}.page_id")
            elif item.url:
                problem = check_url(item.url)
                if problem:
                    violations.append(FieldViolation(f"{here}.url", problem))
            elif not item.children:
                violations.append(
                    FieldViolation(
                        here,
                        "needs a page_id or a url (only a heading with children may have neither)",
                    )
                )
            walk(item.children, f"{here}.children", depth + 1)

    walk(items, "menu.items", 1)
    if count > MAX_ITEMS:
        violations.insert(0, FieldViolation("menu.items", f"at most {MAX_ITEMS} items per menu"))
    if violations:
        raise InvalidArgument(violations[:MAX_VIOLATIONS])
    return refs


def _to_json(items: list[MenuItem]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        entry: dict[str, Any] = {"label": item.label}
        if item.page_id:
            entry["page_id"] = item.page_id
        elif item.url:
            entry["url"] = item.url
        entry["children"] = _to_json(item.children)
        if not item.visible:
            entry["visible"] = False  # stored only when hidden: older menus read as shown
        out.append(entry)
    return out


def _from_json(value: Any) -> list[MenuItem]:
    if not isinstance(value, list):
        return []
    return [
        MenuItem(
            label=str(v.get("label", "")),
            page_id=str(v.get("page_id", "")),
            url=str(v.get("url", "")),
            children=_from_json(v.get("children")),
            visible=v.get("visible", True) is not False,
        )
        for v in value
        if isinstance(v, dict)
    ]


def page_ids(items: list[MenuItem]) -> set[str]:
    return {i.page_id for i in items if i.page_id} | {
        p for i in items for p in page_ids(i.children)
    }


def remap(value: Any, ids: dict[str, str]) -> Any:
    """Stored items JSON with every page_id replaced through `ids` (environment clone)."""
    if isinstance(value, list):
        return [remap(v, ids) for v in value]
    if isinstance(value, dict):
        out = {k: remap(v, ids) for k, v in value.items()}
        if isinstance(out.get("page_id"), str):
            out["page_id"] = ids.get(out["page_id"], out["page_id"])
        return out
    return value


def _views(session: Session, rows: list[Navigation]) -> list[MenuView]:
    """Menus with the current slugs of their pages (one query for all of them)."""
    trees = [_from_json(json.loads(row.items or "[]")) for row in rows]
    wanted = {pid for items in trees for pid in page_ids(items)}
    slugs: dict[str, str] = {}
    if wanted:
        env_ids = {row.environment_id for row in rows}
        slugs = {
            pid: slug
            for pid, slug in session.execute(
                select(Page.id, Page.slug).where(
                    Page.environment_id.in_(env_ids), Page.id.in_(wanted)
                )
            )
        }
    return [
        MenuView(row=row, items=items, slugs=slugs) for row, items in zip(rows, trees, strict=True)
    ]


def _name(name: str, field: str) -> str:
    return validation.definition_name(name, field)


def get_menu(session: Session, principal: Principal, environment_id: str, name: str) -> MenuView:
    env = scope.environment(session, principal, environment_id)
    if not name:
        raise invalid("name", "is required")
    row = session.scalars(
        select(Navigation).where(
            Navigation.environment_id == env.environment_id, Navigation.name == name
        )
    ).first()
    if row is None:
        raise NotFound("menu", name)
    return _views(session, [row])[0]


def list_menus(
    session: Session, principal: Principal, environment_id: str, page: PageRequest
) -> list[MenuView]:
    env = scope.environment(session, principal, environment_id)
    stmt = select(Navigation).where(Navigation.environment_id == env.environment_id)
    if page.after:
        stmt = stmt.where(Navigation.name > page.after)
    return _views(
        session, list(session.scalars(stmt.order_by(Navigation.name).limit(page.size + 1)))
    )


def set_menu(
    session: Session,
    principal: Principal,
    environment_id: str,
    name: str,
    items: list[MenuItem],
) -> MenuView:
    env = scope.environment(session, principal, environment_id)
    _name(name, "menu.name")
    refs = _check_items(items)
    if refs:
        found = set(
            session.scalars(
                select(Page.id).where(Page.environment_id == env.environment_id, Page.id.in_(refs))
            )
        )
        missing = [
            FieldViolation(path, f"no page {shown(pid)} in this environment")
            for pid, paths in refs.items()
            if pid not in found
            for path in paths
        ]
        if missing:
            raise InvalidArgument(sorted(missing, key=lambda v: v.field)[:MAX_VIOLATIONS])
    stored = dumps(_to_json(items))
    if len(stored.encode()) > MAX_JSON_BYTES:
        raise invalid("menu.items", f"must be at most {MAX_JSON_BYTES // 1024} KiB as JSON")
    row = session.scalars(
        select(Navigation)
        .where(Navigation.environment_id == env.environment_id, Navigation.name == name)
        .with_for_update()
    ).first()
    ts = now()
    if row is None:
        row = Navigation(
            id=new_id(),
            environment_id=env.environment_id,
            name=name,
            items="",
            created_at=ts,
            updated_at=ts,
        )
        session.add(row)
    row.items = stored
    row.updated_at = ts
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent SetMenu created it first (PostgreSQL)
        raise Aborted(
            f"menu {shown(name)} was created concurrently; retry", reason="CONFLICT"
        ) from exc
    return _views(session, [row])[0]


def delete_menu(session: Session, principal: Principal, environment_id: str, name: str) -> None:
    view = get_menu(session, principal, environment_id, name)
    session.delete(view.row)

"""Section definitions, pages and their ordered sections: plain functions over a session.

A page's sections are section_entries rows linked through page_sections with a dense,
zero-based position. Every write to a page bumps its version (the etag) inside the same
transaction, so concurrent writers serialize on it and none is lost."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from content_service import outbox, scope, search_index, validation
from content_service.convert import dumps, loads_object, now
from content_service.db.models import Page, PageSection, SectionDefinition, SectionEntry
from content_service.scope import EnvScope
from servicekit.auth import Principal
from servicekit.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound, invalid
from servicekit.ids import new_id
from servicekit.pagination import PageRequest

STATUSES = ("draft", "published", "archived")
MAX_SECTIONS_PER_PAGE = 200


# --- section definitions -----------------------------------------------------------------


def create_definition(
    session: Session,
    principal: Principal,
    environment_id: str,
    name: str,
    schema: dict[str, Any],
    default_content: dict[str, Any],
) -> SectionDefinition:
    env = scope.environment(session, principal, environment_id)
    validator = validation.json_schema(schema, "section_definition.schema")
    validation.content(validator, default_content, "section_definition.default_content")
    ts = now()
    definition = SectionDefinition(
        id=new_id(),
        environment_id=env.environment_id,
        name=validation.definition_name(name, "section_definition.name"),
        schema=dumps(schema),
        default_content=dumps(default_content),
        created_at=ts,
        updated_at=ts,
    )
    session.add(definition)
    _flush_unique(session, f"a section definition named {name!r} already exists here")
    return definition


def get_definition(
    session: Session, principal: Principal, definition_id: str, field: str = "id"
) -> SectionDefinition:
    scope.require_id(definition_id, field)
    definition = session.get(SectionDefinition, definition_id)
    if definition is None:
        raise NotFound("section definition", definition_id)
    try:
        scope.environment(session, principal, definition.environment_id)
    except NotFound:
        raise NotFound("section definition", definition_id) from None
    return definition


def list_definitions(
    session: Session, principal: Principal, environment_id: str, page: PageRequest
) -> list[SectionDefinition]:
    env = scope.environment(session, principal, environment_id)
    stmt = (
        select(SectionDefinition)
        .where(SectionDefinition.environment_id == env.environment_id)
        .order_by(SectionDefinition.id)
        .limit(page.size + 1)
    )
    if page.after:
        stmt = stmt.where(SectionDefinition.id > page.after)
    return list(session.scalars(stmt))


def update_definition(
    session: Session,
    principal: Principal,
    definition_id: str,
    *,
    name: str | None,
    schema: dict[str, Any] | None,
    default_content: dict[str, Any] | None,
) -> SectionDefinition:
    definition = get_definition(session, principal, definition_id, "section_definition.id")
    new_schema = schema if schema is not None else json.loads(definition.schema)
    new_default = (
        default_content if default_content is not None else json.loads(definition.default_content)
    )
    validator = validation.json_schema(new_schema, "section_definition.schema")
    validation.content(validator, new_default, "section_definition.default_content")
    if name is not None:
        definition.name = validation.definition_name(name, "section_definition.name")
    definition.schema = dumps(new_schema)
    definition.default_content = dumps(new_default)
    definition.updated_at = now()
    _flush_unique(session, f"a section definition named {name!r} already exists here")
    return definition


def delete_definition(session: Session, principal: Principal, definition_id: str) -> None:
    definition = get_definition(session, principal, definition_id)
    in_use = session.scalar(
        select(func.count())
        .select_from(SectionEntry)
        .where(SectionEntry.definition_id == definition.id)
    )
    if in_use:
        raise FailedPrecondition(
            f"section definition {definition_id!r} is used by {in_use} section(s); "
            "remove them first",
            reason="DEFINITION_IN_USE",
        )
    session.delete(definition)


# --- pages -------------------------------------------------------------------------------


@dataclass
class SectionInput:
    definition_id: str
    content: dict[str, Any] | None  # None: use the definition's default
    field: str


@dataclass
class PageView:
    """A page with its sections, loaded in the RPC's session and turned into a proto after."""

    page: Page
    sections: list[tuple[SectionEntry, SectionDefinition, int]] = field(default_factory=list)


def _flush_unique(session: Session, message: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        raise AlreadyExists(message) from exc


def _status(value: str, field: str) -> str:
    if value not in STATUSES:
        raise invalid(field, f"must be one of {', '.join(STATUSES)}")
    return value


def _validated_sections(
    session: Session, env: EnvScope, sections: list[SectionInput]
) -> list[tuple[SectionDefinition, dict[str, Any]]]:
    if len(sections) > MAX_SECTIONS_PER_PAGE:
        raise invalid("page.sections", f"at most {MAX_SECTIONS_PER_PAGE} sections per page")
    ids = {s.definition_id for s in sections if s.definition_id}
    found = {
        d.id: d
        for d in session.scalars(
            select(SectionDefinition).where(
                SectionDefinition.id.in_(ids),
                SectionDefinition.environment_id == env.environment_id,
            )
        )
    }
    validators: dict[str, Draft202012Validator] = {}
    out = []
    for section in sections:
        definition = found.get(section.definition_id)
        if definition is None:
            raise invalid(
                f"{section.field}.definition_id",
                f"no section definition {section.definition_id!r} in this environment",
            )
        content = (
            section.content
            if section.content is not None
            else json.loads(definition.default_content)
        )
        validator = validators.get(definition.id)
        if validator is None:
            validator = validators[definition.id] = Draft202012Validator(
                json.loads(definition.schema), format_checker=Draft202012Validator.FORMAT_CHECKER
            )
        validation.content(validator, content, f"{section.field}.content")
        out.append((definition, content))
    return out


def create_page(
    session: Session,
    principal: Principal,
    environment_id: str,
    *,
    slug: str,
    title: str,
    status: str,
    metadata: dict[str, Any],
    sections: list[SectionInput],
    request_id: str,
) -> Page:
    env = scope.environment(session, principal, environment_id)
    if request_id:
        if len(request_id) > 64:
            raise invalid("request_id", "must be at most 64 characters")
        existing = session.scalars(
            select(Page).where(
                Page.environment_id == env.environment_id, Page.request_id == request_id
            )
        ).first()
        if existing is not None:
            return existing
    validation.slug(slug, "page.slug")
    validation.text(title, "page.title", max_len=500)
    checked = _validated_sections(session, env, sections)
    ts = now()
    page = Page(
        id=new_id(),
        environment_id=env.environment_id,
        slug=slug,
        title=title,
        status=_status(status, "page.status"),
        metadata_json=dumps(metadata),
        version=1,
        request_id=request_id or None,
        created_at=ts,
        updated_at=ts,
    )
    session.add(page)
    _flush_unique(session, f"a page with slug {slug!r} already exists in this environment")
    _insert_sections(session, env, page.id, checked, start=0)
    search_index.index_page(session, page)
    return page


def _insert_sections(
    session: Session,
    env: EnvScope,
    page_id: str,
    checked: list[tuple[SectionDefinition, dict[str, Any]]],
    start: int,
) -> list[str]:
    if not checked:
        return []
    ts = now()
    entry_ids = [new_id() for _ in checked]
    session.execute(
        insert(SectionEntry),
        [
            {
                "id": entry_id,
                "environment_id": env.environment_id,
                "definition_id": d.id,
                "content": dumps(content),
                "created_at": ts,
                "updated_at": ts,
            }
            for entry_id, (d, content) in zip(entry_ids, checked, strict=True)
        ],
    )
    session.execute(
        insert(PageSection),
        [
            {
                "id": new_id(),
                "page_id": page_id,
                "section_entry_id": entry_id,
                "position": start + i,
            }
            for i, entry_id in enumerate(entry_ids)
        ],
    )
    return entry_ids


def _page_in_scope(
    session: Session, principal: Principal, page_id: str, field: str, *, lock: bool = False
) -> tuple[Page, EnvScope]:
    scope.require_id(page_id, field)
    stmt = select(Page).where(Page.id == page_id)
    if lock:
        # PostgreSQL: concurrent section edits of one page queue here. SQLite ignores it;
        # BEGIN IMMEDIATE already serializes writers.
        stmt = stmt.with_for_update()
    page = session.scalars(stmt).first()
    if page is None:
        raise NotFound("page", page_id)
    try:
        env = scope.environment(session, principal, page.environment_id)
    except NotFound:
        raise NotFound("page", page_id) from None
    return page, env


def load_view(session: Session, page: Page) -> PageView:
    rows = session.execute(
        select(SectionEntry, SectionDefinition, PageSection.position)
        .join(PageSection, PageSection.section_entry_id == SectionEntry.id)
        .join(SectionDefinition, SectionDefinition.id == SectionEntry.definition_id)
        .where(PageSection.page_id == page.id)
        .order_by(PageSection.position)
    ).all()
    return PageView(page=page, sections=[(e, d, p) for e, d, p in rows])


def get_page(session: Session, principal: Principal, page_id: str) -> PageView:
    page, _ = _page_in_scope(session, principal, page_id, "id")
    return load_view(session, page)


def get_page_by_slug(
    session: Session, principal: Principal, environment_id: str, slug: str
) -> PageView:
    env = scope.environment(session, principal, environment_id)
    if not slug:
        raise invalid("slug", "is required")
    page = session.scalars(
        select(Page).where(Page.environment_id == env.environment_id, Page.slug == slug)
    ).first()
    if page is None:
        raise NotFound("page", slug)
    return load_view(session, page)


def list_pages(
    session: Session,
    principal: Principal,
    environment_id: str,
    status: str | None,
    page: PageRequest,
) -> list[Page]:
    env = scope.environment(session, principal, environment_id)
    stmt = select(Page).where(Page.environment_id == env.environment_id)
    if status:
        stmt = stmt.where(Page.status == status)
    if page.after:
        stmt = stmt.where(Page.id > page.after)
    return list(session.scalars(stmt.order_by(Page.id).limit(page.size + 1)))


def update_page(
    session: Session,
    principal: Principal,
    page_id: str,
    changes: dict[str, Any],
    etag: str,
) -> Page:
    page, _ = _page_in_scope(session, principal, page_id, "page.id", lock=True)
    if etag and etag != etag_of(page):
        raise Aborted(
            "the page changed since you read it (etag mismatch); read it again",
            reason="ETAG_MISMATCH",
        )
    if "title" in changes:
        page.title = validation.text(changes["title"], "page.title", max_len=500)
    if "slug" in changes:
        page.slug = validation.slug(changes["slug"], "page.slug")
    if "status" in changes:
        page.status = _status(changes["status"], "page.status")
    if "metadata" in changes:
        page.metadata_json = dumps(changes["metadata"])
    _touch(page)
    _flush_unique(session, f"a page with slug {page.slug!r} already exists in this environment")
    search_index.index_page(session, page)
    return page


def delete_page(session: Session, principal: Principal, page_id: str) -> EnvScope:
    page, env = _page_in_scope(session, principal, page_id, "id", lock=True)
    entry_ids = list(
        session.scalars(select(PageSection.section_entry_id).where(PageSection.page_id == page.id))
    )
    search_index.forget_page(session, page)
    session.delete(page)
    session.flush()
    if entry_ids:
        session.execute(delete(SectionEntry).where(SectionEntry.id.in_(entry_ids)))
    return env


def etag_of(page: Page) -> str:
    return f'W/"{page.version}"'


def _touch(page: Page) -> None:
    page.version += 1
    page.updated_at = now()


# --- sections on a page ------------------------------------------------------------------


def _positions(session: Session, page_id: str) -> list[tuple[str, str]]:
    """(page_sections.id, section_entry_id) in order."""
    rows = session.execute(
        select(PageSection.id, PageSection.section_entry_id)
        .where(PageSection.page_id == page_id)
        .order_by(PageSection.position)
    ).all()
    return [(r[0], r[1]) for r in rows]


def _renumber(session: Session, order: list[str]) -> None:
    for position, link_id in enumerate(order):
        session.execute(
            update(PageSection).where(PageSection.id == link_id).values(position=position)
        )


def add_section(
    session: Session,
    principal: Principal,
    page_id: str,
    section: SectionInput,
    position: int | None,
) -> PageView:
    page, env = _page_in_scope(session, principal, page_id, "page_id", lock=True)
    links = _positions(session, page.id)
    if len(links) >= MAX_SECTIONS_PER_PAGE:
        raise FailedPrecondition(f"a page holds at most {MAX_SECTIONS_PER_PAGE} sections")
    if position is not None and position < 0:
        raise invalid("position", "must not be negative")
    checked = _validated_sections(session, env, [section])
    entry_id = _insert_sections(session, env, page.id, checked, start=len(links))[0]
    if position is not None and position < len(links):
        new_link = session.scalars(
            select(PageSection.id).where(PageSection.section_entry_id == entry_id)
        ).one()
        order = [link for link, _ in links]
        order.insert(position, new_link)
        _renumber(session, order)
    _touch(page)
    search_index.index_page(session, page)
    return load_view(session, page)


def _section_link(
    session: Session, page: Page, section_id: str
) -> tuple[list[tuple[str, str]], int]:
    scope.require_id(section_id, "section_id")
    links = _positions(session, page.id)
    for index, (_, entry_id) in enumerate(links):
        if entry_id == section_id:
            return links, index
    raise NotFound("section", section_id)


def update_section(
    session: Session,
    principal: Principal,
    page_id: str,
    section_id: str,
    content: dict[str, Any],
) -> PageView:
    page, _ = _page_in_scope(session, principal, page_id, "page_id", lock=True)
    _section_link(session, page, section_id)
    entry = session.get(SectionEntry, section_id)
    assert entry is not None
    definition = session.get(SectionDefinition, entry.definition_id)
    assert definition is not None
    validator = Draft202012Validator(
        json.loads(definition.schema), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    validation.content(validator, content, "content")
    entry.content = dumps(content)
    entry.updated_at = now()
    _touch(page)
    search_index.index_page(session, page)
    return load_view(session, page)


def move_section(
    session: Session, principal: Principal, page_id: str, section_id: str, position: int
) -> PageView:
    page, _ = _page_in_scope(session, principal, page_id, "page_id", lock=True)
    if position < 0:
        raise invalid("position", "must not be negative")
    links, index = _section_link(session, page, section_id)
    order = [link for link, _ in links]
    moved = order.pop(index)
    order.insert(min(position, len(order)), moved)
    _renumber(session, order)
    _touch(page)
    search_index.index_page(session, page)
    return load_view(session, page)


def remove_section(
    session: Session, principal: Principal, page_id: str, section_id: str
) -> PageView:
    page, _ = _page_in_scope(session, principal, page_id, "page_id", lock=True)
    links, index = _section_link(session, page, section_id)
    link_id, entry_id = links.pop(index)
    session.execute(delete(PageSection).where(PageSection.id == link_id))
    session.execute(delete(SectionEntry).where(SectionEntry.id == entry_id))
    _renumber(session, [link for link, _ in links])
    _touch(page)
    search_index.index_page(session, page)
    outbox.enqueue(session, page.environment_id, outbox.Kind.SECTION, [entry_id], outbox.Op.DELETE)
    return load_view(session, page)


def loads_metadata(page: Page) -> dict[str, Any]:
    return loads_object(page.metadata_json)

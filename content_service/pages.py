"""Section definitions, pages and their ordered sections: plain functions over a session.

A page's sections are section_entries rows linked through page_sections with a dense,
zero-based position. Every write to a page bumps its version (the etag) inside the same
transaction, so concurrent writers serialize on it and none is lost."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, TypeVar

from sqlalchemy import (
    Select,
    Table,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from content_service import indexing, scope, validation
from content_service.db import bulk
from content_service.db.models import (
    Environment,
    Page,
    PageSection,
    SectionDefinition,
    SectionEntry,
    Site,
)
from content_service.db.raw import RawSelect, StatementConnection
from content_service.db.values import dumps, now
from content_service.scope import EnvScope
from servicekit.auth import Principal
from servicekit.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    invalid,
    shown,
)
from servicekit.ids import new_id, new_ids
from servicekit.pagination import PageRequest

STATUSES = ("draft", "published", "archived")
MAX_SECTIONS_PER_PAGE = 200
# Sizes, encoded as the API carries them (validation.encoded_size), checked before anything is
# written, so that every page fits a response (a default client receives at most 4 MiB) and a
# write never answers with an error after it committed (docs/content-api.md, "Size limits").
MAX_SECTION_BYTES = 256 * 1024  # one section's content
MAX_METADATA_BYTES = 64 * 1024  # a page's metadata
MAX_PAGE_BYTES = 1024 * 1024  # a whole page as GetPage returns it, every section included
MAX_BATCH_BYTES = 3 * 1024 * 1024  # every page of one BatchCreatePages (its response)
MAX_SCHEMA_BYTES = 64 * 1024  # a section definition's schema
MAX_DEFAULT_CONTENT_BYTES = 64 * 1024  # and its default content
# What a page and each section add to their contents in a response: ids, names, times, etag,
# field tags and lengths (an upper bound).
PAGE_OVERHEAD = 256
SECTION_OVERHEAD = 192
# BatchCreatePages: at most this many pages per call (docs/content-api.md).
MAX_PAGES_PER_BATCH = 500

# Core tables for multi-row inserts: executemany, without the ORM's per-object bookkeeping.
PAGES: Table = Page.__table__  # type: ignore[assignment]
SECTION_ENTRIES: Table = SectionEntry.__table__  # type: ignore[assignment]
PAGE_SECTIONS: Table = PageSection.__table__  # type: ignore[assignment]


# --- section definitions -----------------------------------------------------------------


SCHEMA_FIELD = "section_definition.schema"


def definition_schema(schema: dict[str, Any]) -> validation.ContentValidator:
    """A definition's schema checked and compiled (validation.json_schema): callers do this
    before they open the write transaction, which then only stores it."""
    validation.struct_bytes(
        validation.encoded_size(schema), SCHEMA_FIELD, max_bytes=MAX_SCHEMA_BYTES
    )
    return validation.json_schema(schema, SCHEMA_FIELD)


def _default_content(value: dict[str, Any]) -> dict[str, Any]:
    validation.struct_bytes(
        validation.encoded_size(value),
        "section_definition.default_content",
        max_bytes=MAX_DEFAULT_CONTENT_BYTES,
    )
    return value


def create_definition(
    session: Session,
    principal: Principal,
    environment_id: str,
    name: str,
    schema: validation.ContentValidator,
    default_content: dict[str, Any],
) -> SectionDefinition:
    """`schema` comes from definition_schema()."""
    env = scope.environment(session, principal, environment_id)
    check_default(schema, default_content)
    ts = now()
    definition = SectionDefinition(
        id=new_id(),
        environment_id=env.environment_id,
        name=validation.definition_name(name, "section_definition.name"),
        schema=dumps(schema.schema),
        default_content=dumps(default_content),
        created_at=ts,
        updated_at=ts,
    )
    session.add(definition)
    _flush_unique(session, f"a section definition named {shown(name)} already exists here")
    return definition


def check_default(schema: validation.ContentValidator, default_content: dict[str, Any]) -> None:
    """A definition's default content, valid for its schema."""
    validation.content(
        schema, _default_content(default_content), "section_definition.default_content"
    )


def get_definition(
    session: Session, principal: Principal, definition_id: str, field: str = "id"
) -> SectionDefinition:
    return scope.in_environment(
        session, principal, SectionDefinition, definition_id, "section definition", field
    )[0]


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
    schema: validation.ContentValidator | None,
    default_content: dict[str, Any] | None,
) -> SectionDefinition:
    """`schema` (None: keep the stored one) comes from definition_schema()."""
    definition = get_definition(session, principal, definition_id, "section_definition.id")
    validator, new_default = _checked_definition(definition, schema, default_content)
    if name is not None:
        definition.name = validation.definition_name(name, "section_definition.name")
    definition.schema = dumps(validator.schema)
    definition.default_content = dumps(new_default)
    definition.updated_at = now()
    _flush_unique(session, f"a section definition named {shown(name)} already exists here")
    return definition


def check_definition_update(
    session: Session,
    principal: Principal,
    definition_id: str,
    schema: validation.ContentValidator | None,
    default_content: dict[str, Any] | None,
) -> None:
    """update_definition's content check, made first in a read (validation.checked_first)."""
    definition = get_definition(session, principal, definition_id, "section_definition.id")
    _checked_definition(definition, schema, default_content)


def _checked_definition(
    definition: SectionDefinition,
    schema: validation.ContentValidator | None,
    default_content: dict[str, Any] | None,
) -> tuple[validation.ContentValidator, dict[str, Any]]:
    # The stored schema was checked when it was stored: its cached validator is enough.
    validator = schema or validation.validator_for(definition.schema)
    new_default = (
        _default_content(default_content)
        if default_content is not None
        else json.loads(definition.default_content)
    )
    validation.content(validator, new_default, "section_definition.default_content")
    return validator, new_default


def delete_definition(session: Session, principal: Principal, definition_id: str) -> None:
    definition = get_definition(session, principal, definition_id)
    in_use = session.scalar(
        select(func.count())
        .select_from(SectionEntry)
        .where(SectionEntry.definition_id == definition.id)
    )
    if in_use:
        raise FailedPrecondition(
            f"section definition {shown(definition_id)} is used by {in_use} section(s); "
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
    # The content's encoded size when the caller knows it (Struct.ByteSize() of the request);
    # None: computed (validation.encoded_size).
    size: int | None = None


def _flush_unique(session: Session, message: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        raise AlreadyExists(message) from exc


def _status(value: str, field: str) -> str:
    if value not in STATUSES:
        raise invalid(field, f"must be one of {', '.join(STATUSES)}")
    return value


def _definitions(
    session: Session, env: EnvScope, sections: Iterable[SectionInput]
) -> dict[str, SectionDefinition]:
    """The environment's definitions these sections name, by id (one query)."""
    ids = {s.definition_id for s in sections if s.definition_id and scope.valid_id(s.definition_id)}
    if not ids:
        return {}
    return {
        d.id: d
        for d in session.scalars(
            select(SectionDefinition).where(
                SectionDefinition.id.in_(ids),
                SectionDefinition.environment_id == env.environment_id,
            )
        )
    }


class _SectionRules:
    """The rules for a page's sections: at most MAX_SECTIONS_PER_PAGE, each of a definition
    of this environment, content (or the definition's default) valid for its schema
    (validation.validator_for: one validator per schema text and process)."""

    def __init__(self, definitions: dict[str, SectionDefinition]) -> None:
        self.definitions = definitions

    def check(
        self, sections: list[SectionInput]
    ) -> tuple[list[tuple[SectionDefinition, dict[str, Any]]], int]:
        """The sections with their content (or default), and the bytes they add to a page."""
        if len(sections) > MAX_SECTIONS_PER_PAGE:
            raise invalid("page.sections", f"at most {MAX_SECTIONS_PER_PAGE} sections per page")
        out = []
        size = 0
        for section in sections:
            if section.content is not None:  # before the schema is asked about it
                size += validation.struct_bytes(
                    section.size
                    if section.size is not None
                    else validation.encoded_size(section.content),
                    f"{section.field}.content",
                    max_bytes=MAX_SECTION_BYTES,
                )
            definition = self.definitions.get(section.definition_id)
            if definition is None:
                raise invalid(
                    f"{section.field}.definition_id",
                    f"no section definition {shown(section.definition_id)} in this environment",
                )
            if section.content is None:
                content = json.loads(definition.default_content)
                size += validation.stored_size(definition.default_content)
            else:
                content = section.content
            validator = validation.validator_for(definition.schema)
            validation.content(validator, content, f"{section.field}.content")
            out.append((definition, content))
        return out, size + SECTION_OVERHEAD * len(sections)


def _validated_sections(
    session: Session, env: EnvScope, sections: list[SectionInput]
) -> tuple[list[tuple[SectionDefinition, dict[str, Any]]], int]:
    return _SectionRules(_definitions(session, env, sections)).check(sections)


def _metadata_bytes(metadata: dict[str, Any], size: int | None, field: str) -> int:
    return validation.struct_bytes(
        size if size is not None else validation.encoded_size(metadata),
        field,
        max_bytes=MAX_METADATA_BYTES,
    )


def _page_bytes(title: str, slug: str, metadata: int, sections: int, field: str) -> int:
    """A page's encoded size from its parts, refused over MAX_PAGE_BYTES."""
    total = PAGE_OVERHEAD + len(title.encode()) + len(slug.encode()) + metadata + sections
    if total > MAX_PAGE_BYTES:
        raise invalid(
            field,
            f"the page would be {total} bytes encoded, over the limit of "
            f"{MAX_PAGE_BYTES // (1024 * 1024)} MiB for a page with all its sections",
        )
    return total


def _stored_page_bytes(session: Session, page: Page, *, without: str | None = None) -> int:
    """The encoded size of a stored page's title, slug, metadata and sections (but the section
    `without`), an upper bound within a few bytes."""
    rows = session.execute(
        select(SectionEntry.id, SectionEntry.content)
        .join(PageSection, PageSection.section_entry_id == SectionEntry.id)
        .where(PageSection.page_id == page.id)
    ).all()
    sections = sum(
        validation.stored_size(content) + SECTION_OVERHEAD
        for entry_id, content in rows
        if entry_id != without
    )
    return (
        PAGE_OVERHEAD
        + len(page.title.encode())
        + len(page.slug.encode())
        + validation.stored_size(page.metadata_json)
        + sections
    )


@dataclass
class NewPage:
    """One page to create: CreatePageRequest's fields (BatchCreatePages has one per item)."""

    slug: str
    title: str
    status: str
    metadata: dict[str, Any]
    sections: list[SectionInput]
    request_id: str
    # The metadata's encoded size when the caller knows it; None: computed.
    metadata_size: int | None = None


@dataclass(slots=True)
class WrittenPage:
    """A page row create_pages inserted: a plain record, not an ORM object (building one per
    page was a tenth of a bulk import's CPU). Fields in the table's column order."""

    id: str
    environment_id: str
    slug: str
    title: str
    status: str
    metadata_json: str
    version: int
    request_id: str | None
    created_at: int
    updated_at: int


_WRITTEN_FIELDS = tuple(f.name for f in fields(WrittenPage))
# The insert's columns, and a WrittenPage's values in their order (one C call a row).
_PAGE_INSERT = tuple("metadata" if name == "metadata_json" else name for name in _WRITTEN_FIELDS)
_page_row = attrgetter(*_WRITTEN_FIELDS)
_ENTRY_INSERT = ("id", "environment_id", "definition_id", "content", "created_at", "updated_at")
_LINK_INSERT = ("id", "page_id", "section_entry_id", "position")


@dataclass
class CreatedPage:
    """A page create_pages wrote, with its sections in order as (section entry id,
    definition, content, position)."""

    page: WrittenPage
    sections: list[tuple[str, SectionDefinition, dict[str, Any], int]]


def _no_prefix(_index: int) -> str:
    return ""


def _located(prefix: str, field: str, message: str) -> str:
    return f"{prefix}{field}: {message}" if prefix else message


def create_pages(
    session: Session,
    principal: Principal,
    environment_id: str,
    items: Sequence[NewPage],
    where: Callable[[int], str] = _no_prefix,
) -> list[CreatedPage | ViewRows]:
    """Creates pages and their sections in the session's transaction: all of them, or (an
    error) none. CreatePage is the one-item case, so every rule lives here once; `where(i)`
    names item i in errors ("" for CreatePage, "requests[i]." for BatchCreatePages). An item
    whose request_id already made a page in this environment gets that page back (AIP-155).

    Written with one multi-row insert per table, search documents and outbox rows included
    (indexing.pages_created)."""
    env = scope.environment(session, principal, environment_id)
    by_request: dict[str, int] = {}
    for i, item in enumerate(items):
        if not item.request_id:
            continue
        if len(item.request_id) > 64:
            raise invalid(f"{where(i)}request_id", "must be at most 64 characters")
        if item.request_id in by_request:
            first = where(by_request[item.request_id])
            raise invalid(f"{where(i)}request_id", f"repeats {first}request_id")
        by_request[item.request_id] = i
    found: dict[str, Page] = {}
    if by_request:
        found = {
            p.request_id: p
            for p in session.scalars(
                select(Page).where(
                    Page.environment_id == env.environment_id,
                    Page.request_id.in_(by_request),
                )
            )
            if p.request_id is not None
        }
    fresh = [(i, item) for i, item in enumerate(items) if item.request_id not in found]

    rules = _SectionRules(_definitions(session, env, (s for _, it in fresh for s in it.sections)))
    with validation.one_budget():  # every section's check shares one time budget
        checked, by_slug = _check_items(fresh, rules, where)

    def taken(slug: str) -> AlreadyExists:
        message = f"a page with slug {shown(slug)} already exists in this environment"
        return AlreadyExists(_located(where(by_slug[slug]), "page.slug", message))

    if by_slug:
        existing = session.scalars(
            select(Page.slug).where(
                Page.environment_id == env.environment_id, Page.slug.in_(by_slug)
            )
        ).all()
        if existing:
            raise taken(min(existing, key=by_slug.__getitem__))

    ts = now()
    out: list[CreatedPage | ViewRows | None] = [None] * len(items)
    written: list[WrittenPage] = []
    groups: list[tuple[str, list[tuple[SectionDefinition, dict[str, Any]]], int]] = []
    for page_id, (i, item, sections) in zip(new_ids(len(checked)), checked, strict=True):
        page = WrittenPage(
            id=page_id,
            environment_id=env.environment_id,
            slug=item.slug,
            title=item.title,
            status=item.status,
            metadata_json=dumps(item.metadata),
            version=1,
            request_id=item.request_id or None,
            created_at=ts,
            updated_at=ts,
        )
        written.append(page)
        groups.append((page.id, sections, 0))
        out[i] = CreatedPage(page, [])
    if written:
        try:
            bulk.insert_rows(session, PAGES, _PAGE_INSERT, [_page_row(p) for p in written])
        except IntegrityError as exc:
            # Only a concurrent writer (PostgreSQL) gets past the check above.
            if len(checked) == 1:
                raise taken(checked[0][1].slug) from exc
            raise AlreadyExists(
                "a page with one of these slugs or request ids was created meanwhile in this "
                "environment"
            ) from exc
        entry_ids = _insert_sections(session, env, groups)
        new_pages: list[indexing.NewPage] = []
        for page, (i, _, sections), ids in zip(written, checked, entry_ids, strict=True):
            created = out[i]
            assert isinstance(created, CreatedPage)
            created.sections = [
                (entry_id, definition, content, position)
                for position, (entry_id, (definition, content)) in enumerate(
                    zip(ids, sections, strict=True)
                )
            ]
            new_pages.append(
                indexing.NewPage(
                    page.id, page.environment_id, page.title, [content for _, content in sections]
                )
            )
        indexing.pages_created(session, new_pages)
    for i, item in enumerate(items):
        if out[i] is None:
            out[i] = load_view(session, found[item.request_id].id)
    return [c for c in out if c is not None]


def check_new_pages(
    session: Session,
    principal: Principal,
    environment_id: str,
    items: Sequence[NewPage],
    where: Callable[[int], str] = _no_prefix,
) -> None:
    """create_pages's item and content checks, made first in a read (validation.checked_first):
    the same rules, so the write finds every check already passed."""
    env = scope.environment(session, principal, environment_id)
    rules = _SectionRules(_definitions(session, env, (s for it in items for s in it.sections)))
    with validation.one_budget():
        _check_items(list(enumerate(items)), rules, where)


Checked = list[tuple[int, NewPage, list[tuple[SectionDefinition, dict[str, Any]]]]]


def _check_items(
    fresh: list[tuple[int, NewPage]], rules: _SectionRules, where: Callable[[int], str]
) -> tuple[Checked, dict[str, int]]:
    """create_pages' rules for each new page: the pages with their checked sections, and the
    index of each slug."""
    by_slug: dict[str, int] = {}
    batch_bytes = 0
    checked: Checked = []
    for i, item in fresh:
        try:
            validation.slug(item.slug, "page.slug")
            validation.text(item.title, "page.title", max_len=500)
            metadata = _metadata_bytes(item.metadata, item.metadata_size, "page.metadata")
            sections, sections_size = rules.check(item.sections)
            batch_bytes += _page_bytes(
                item.title, item.slug, metadata, sections_size, "page.sections"
            )
            _status(item.status, "page.status")
        except InvalidArgument as exc:
            raise exc.within(where(i)) from None
        if batch_bytes > MAX_BATCH_BYTES:
            raise invalid(
                f"{where(i)}page",
                f"the pages up to this one are {batch_bytes} bytes encoded, over the limit of "
                f"{MAX_BATCH_BYTES // (1024 * 1024)} MiB for one call (its response); send "
                "fewer pages per call",
            )
        if item.slug in by_slug:
            raise invalid(f"{where(i)}page.slug", f"repeats {where(by_slug[item.slug])}page.slug")
        by_slug[item.slug] = i
        checked.append((i, item, sections))
    return checked, by_slug


def _insert_sections(
    session: Session,
    env: EnvScope,
    groups: list[tuple[str, list[tuple[SectionDefinition, dict[str, Any]]], int]],
) -> list[list[str]]:
    """Inserts sections and links them to their pages, each group (page id, sections, first
    position) at consecutive positions: one multi-row insert per table. Returns the new
    section entry ids, group by group."""
    ts = now()
    entries: list[tuple[Any, ...]] = []
    links: list[tuple[Any, ...]] = []
    out: list[list[str]] = []
    fresh = iter(new_ids(2 * sum(len(checked) for _, checked, _ in groups)))
    for page_id, checked, start in groups:
        ids = []
        for i, (definition, content) in enumerate(checked):
            entry_id = next(fresh)
            ids.append(entry_id)
            entries.append((entry_id, env.environment_id, definition.id, dumps(content), ts, ts))
            links.append((next(fresh), page_id, entry_id, start + i))
        out.append(ids)
    bulk.insert_rows(session, SECTION_ENTRIES, _ENTRY_INSERT, entries)
    bulk.insert_rows(session, PAGE_SECTIONS, _LINK_INSERT, links)
    return out


def _page_in_scope(
    session: Session, principal: Principal, page_id: str, field: str, *, lock: bool = False
) -> tuple[Page, EnvScope]:
    # lock: concurrent section edits of one page queue on PostgreSQL.
    return scope.in_environment(session, principal, Page, page_id, "page", field, lock=lock)


# GetPage and GetPageBySlug, the hot reads: ONE Core statement each (the page, the scope check
# and the sections in order; one snapshot on both backends), built once with bind parameters,
# so a call neither loads ORM objects nor rebuilds SQL, run on the driver's cursor (db.raw).
# Measured in-process: 4 ORM statements 570 us a call; one Core statement 87 us and on the
# cursor 40 us, both with the Page message built. The team filter is Principal.visible_team.
_Select = TypeVar("_Select", bound=Select[*tuple[Any, ...]])
# Named tuples with VIEW_COLUMNS' names.
ViewRows = Sequence[Any]
VIEW_COLUMNS = (
    Page.id,
    Page.environment_id,
    Page.slug,
    Page.title,
    Page.status,
    Page.metadata_json.label("metadata_json"),
    Page.version,
    Page.created_at,
    Page.updated_at,
    SectionEntry.id.label("section_id"),
    SectionEntry.content.label("section_content"),
    SectionDefinition.id.label("definition_id"),
    SectionDefinition.name.label("definition_name"),
    PageSection.position.label("section_position"),
)


def _with_sections(stmt: _Select) -> _Select:
    return (
        stmt.outerjoin(PageSection, PageSection.page_id == Page.id)
        .outerjoin(SectionEntry, SectionEntry.id == PageSection.section_entry_id)
        .outerjoin(SectionDefinition, SectionDefinition.id == SectionEntry.definition_id)
        .order_by(PageSection.position)
    )


_BY_ID = _with_sections(
    select(*VIEW_COLUMNS)
    .join(Environment, Environment.id == Page.environment_id)
    .join(Site, Site.id == Environment.site_id)
    .where(Page.id == bindparam("page_id"))
)
_BY_ID_OF_TEAM = _BY_ID.where(Site.team_id == bindparam("team_id"))
_BY_ID_RAW, _BY_ID_OF_TEAM_RAW = RawSelect(_BY_ID), RawSelect(_BY_ID_OF_TEAM)


def load_view(session: Session, page_id: str) -> ViewRows:
    """A page as get_page's rows, read in the session (its pending changes flushed first):
    what a write returns."""
    return session.execute(_BY_ID, {"page_id": page_id}).all()


# Environment first, page LEFT JOINed: no row = no such environment (for this caller), a row
# without a page id = no such slug in it.
_BY_SLUG = _with_sections(
    select(*VIEW_COLUMNS)
    .select_from(Environment)
    .join(Site, Site.id == Environment.site_id)
    .outerjoin(Page, (Page.environment_id == Environment.id) & (Page.slug == bindparam("slug")))
    .where(Environment.id == bindparam("environment_id"))
)
_BY_SLUG_OF_TEAM = _BY_SLUG.where(Site.team_id == bindparam("team_id"))
_BY_SLUG_RAW, _BY_SLUG_OF_TEAM_RAW = RawSelect(_BY_SLUG), RawSelect(_BY_SLUG_OF_TEAM)


def get_page(conn: StatementConnection, principal: Principal, page_id: str) -> ViewRows:
    """The page as rows of VIEW_COLUMNS, one per section in order (one row with NULL section
    columns for a page without sections). Another team's page is NotFound, like a missing
    one."""
    scope.require_id(page_id, "id")
    team_id = principal.visible_team
    if team_id is None:
        rows = _BY_ID_RAW.all(conn, {"page_id": page_id})
    else:
        rows = _BY_ID_OF_TEAM_RAW.all(conn, {"page_id": page_id, "team_id": team_id})
    if not rows:
        raise NotFound("page", page_id)
    return rows


def get_page_by_slug(
    conn: StatementConnection, principal: Principal, environment_id: str, slug: str
) -> ViewRows:
    """Like get_page, by environment and slug."""
    scope.require_id(environment_id, "environment_id")
    team_id = principal.visible_team
    params = {"environment_id": environment_id, "slug": slug}
    if team_id is None:
        rows = _BY_SLUG_RAW.all(conn, params)
    else:
        rows = _BY_SLUG_OF_TEAM_RAW.all(conn, {**params, "team_id": team_id})
    if not rows:
        raise NotFound("environment", environment_id)
    if not slug:
        raise invalid("slug", "is required")
    if rows[0].id is None:
        raise NotFound("page", slug)
    return rows


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
    title = validation.text(changes.get("title", page.title), "page.title", max_len=500)
    slug = validation.slug(changes.get("slug", page.slug), "page.slug")
    status = _status(changes.get("status", page.status), "page.status")
    metadata = page.metadata_json
    if "metadata" in changes:
        _metadata_bytes(changes["metadata"], changes.get("metadata_size"), "page.metadata")
        metadata = dumps(changes["metadata"])
    # The page with its new parts must still fit a response (before anything is written).
    before = _stored_page_bytes(session, page)
    after = before + sum(
        len(new.encode()) - len(old.encode())
        for new, old in ((title, page.title), (slug, page.slug))
    )
    after += validation.stored_size(metadata) - validation.stored_size(page.metadata_json)
    if after > MAX_PAGE_BYTES and after > before:
        raise invalid("page", f"the page would pass {MAX_PAGE_BYTES // (1024 * 1024)} MiB encoded")
    page.title, page.slug, page.status, page.metadata_json = title, slug, status, metadata
    _touch(page)
    _flush_unique(
        session, f"a page with slug {shown(page.slug)} already exists in this environment"
    )
    indexing.page_changed(session, page)
    return page


def delete_page(session: Session, principal: Principal, page_id: str) -> EnvScope:
    page, env = _page_in_scope(session, principal, page_id, "id", lock=True)
    entry_ids = list(
        session.scalars(select(PageSection.section_entry_id).where(PageSection.page_id == page.id))
    )
    indexing.page_deleted(session, page)
    session.delete(page)
    session.flush()
    if entry_ids:
        session.execute(delete(SectionEntry).where(SectionEntry.id.in_(entry_ids)))
    return env


def etag_of(page: Page | WrittenPage) -> str:
    return etag(page.version)


def etag(version: int) -> str:
    return f'W/"{version}"'


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
) -> ViewRows:
    page, env = _page_in_scope(session, principal, page_id, "page_id", lock=True)
    links = _positions(session, page.id)
    if len(links) >= MAX_SECTIONS_PER_PAGE:
        raise FailedPrecondition(f"a page holds at most {MAX_SECTIONS_PER_PAGE} sections")
    if position is not None and position < 0:
        raise invalid("position", "must not be negative")
    checked, added = _validated_sections(session, env, [section])
    if _stored_page_bytes(session, page) + added > MAX_PAGE_BYTES:
        raise _page_full(added)
    entry_id = _insert_sections(session, env, [(page.id, checked, len(links))])[0][0]
    if position is not None and position < len(links):
        new_link = session.scalars(
            select(PageSection.id).where(PageSection.section_entry_id == entry_id)
        ).one()
        order = [link for link, _ in links]
        order.insert(position, new_link)
        _renumber(session, order)
    _touch(page)
    indexing.page_changed(session, page)
    return load_view(session, page.id)


def check_added_section(
    session: Session, principal: Principal, page_id: str, section: SectionInput
) -> None:
    """add_section's content check, made first in a read (validation.checked_first)."""
    _, env = _page_in_scope(session, principal, page_id, "page_id")
    _validated_sections(session, env, [section])


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
    size: int | None = None,
) -> ViewRows:
    """`size`: the content's encoded size when the caller knows it."""
    size = validation.struct_bytes(
        size if size is not None else validation.encoded_size(content),
        "content",
        max_bytes=MAX_SECTION_BYTES,
    )
    page, _ = _page_in_scope(session, principal, page_id, "page_id", lock=True)
    _section_link(session, page, section_id)
    if _stored_page_bytes(session, page, without=section_id) + size + SECTION_OVERHEAD > (
        MAX_PAGE_BYTES
    ):
        raise _page_full(size)
    entry = _checked_section(session, section_id, content)
    entry.content = dumps(content)
    entry.updated_at = now()
    _touch(page)
    indexing.page_changed(session, page)
    return load_view(session, page.id)


def check_section_update(
    session: Session, principal: Principal, page_id: str, section_id: str, content: dict[str, Any]
) -> None:
    """update_section's content check, made first in a read (validation.checked_first)."""
    page, _ = _page_in_scope(session, principal, page_id, "page_id")
    _section_link(session, page, section_id)
    _checked_section(session, section_id, content)


def _checked_section(session: Session, section_id: str, content: dict[str, Any]) -> SectionEntry:
    entry = session.get(SectionEntry, section_id)
    assert entry is not None
    definition = session.get(SectionDefinition, entry.definition_id)
    assert definition is not None
    validation.content(validation.validator_for(definition.schema), content, "content")
    return entry


def move_section(
    session: Session, principal: Principal, page_id: str, section_id: str, position: int
) -> ViewRows:
    page, _ = _page_in_scope(session, principal, page_id, "page_id", lock=True)
    if position < 0:
        raise invalid("position", "must not be negative")
    links, index = _section_link(session, page, section_id)
    order = [link for link, _ in links]
    moved = order.pop(index)
    order.insert(min(position, len(order)), moved)
    _renumber(session, order)
    _touch(page)
    indexing.page_changed(session, page)
    return load_view(session, page.id)


def remove_section(
    session: Session, principal: Principal, page_id: str, section_id: str
) -> ViewRows:
    page, _ = _page_in_scope(session, principal, page_id, "page_id", lock=True)
    links, index = _section_link(session, page, section_id)
    link_id, entry_id = links.pop(index)
    session.execute(delete(PageSection).where(PageSection.id == link_id))
    session.execute(delete(SectionEntry).where(SectionEntry.id == entry_id))
    _renumber(session, [link for link, _ in links])
    _touch(page)
    indexing.section_removed(session, page, entry_id)
    return load_view(session, page.id)


def _page_full(adding: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"the page would pass {MAX_PAGE_BYTES // (1024 * 1024)} MiB encoded with this "
        f"section ({adding} bytes); a page with all its sections must fit one response. "
        "Make sections smaller or split the page",
        reason="PAGE_TOO_LARGE",
    )

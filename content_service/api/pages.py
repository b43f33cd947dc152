"""PageService: section definitions, pages and sections."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf import empty_pb2
from loom.content.v1 import pages_pb2, pages_pb2_grpc
from sqlalchemy.orm import Session

from content_service import pages, validation
from content_service.api.common import STATUS_FROM_DB, mask_paths, status_to_db
from content_service.api.convert import (
    dict_to_struct,
    struct_field_to_json,
    struct_from_json,
    ts,
)
from content_service.db import models
from content_service.db.engine import Database
from content_service.db.values import loads_object
from servicekit.auth import current_principal
from servicekit.errors import InvalidArgument, invalid
from servicekit.pagination import page_of, page_request


def definition_proto(row: models.SectionDefinition) -> pages_pb2.SectionDefinition:
    return pages_pb2.SectionDefinition(
        id=row.id,
        environment_id=row.environment_id,
        name=row.name,
        schema=dict_to_struct(json.loads(row.schema)),
        default_content=dict_to_struct(json.loads(row.default_content)),
        create_time=ts(row.created_at),
        update_time=ts(row.updated_at),
    )


def page_proto(row: models.Page) -> pages_pb2.Page:
    """A page without its sections, as ListPages gives it."""
    return pages_pb2.Page(
        id=row.id,
        environment_id=row.environment_id,
        slug=row.slug,
        title=row.title,
        status=STATUS_FROM_DB[row.status],
        metadata=dict_to_struct(loads_object(row.metadata_json)),
        create_time=ts(row.created_at),
        update_time=ts(row.updated_at),
        etag=pages.etag_of(row),
    )


def fill_created(
    page: pages_pb2.Page, created: pages.CreatedPage | pages.ViewRows, sent: pages_pb2.Page
) -> None:
    """Makes `page` (empty) the page create_pages returned: the same message GetPage gives for
    it afterwards. When this call created it, `sent` (the request's page) is copied whole, in
    C, and every output-only field overwritten: its slug, title, metadata and section contents
    are what was stored (a Struct survives storage unchanged), at half the cost of building
    the message field by field."""
    if not isinstance(created, pages.CreatedPage):  # replayed: found by its request_id
        page.CopyFrom(rows_proto(created))
        return
    row = created.page
    page.CopyFrom(sent)
    page.DiscardUnknownFields()  # a newer client's fields are not ours to echo
    page.id = row.id
    page.environment_id = row.environment_id
    page.status = STATUS_FROM_DB[row.status]  # UNSPECIFIED became DRAFT
    page.metadata.SetInParent()  # present even when empty, as from stored JSON
    page.create_time.FromSeconds(row.created_at)  # nanos 0, whatever was sent
    page.update_time.FromSeconds(row.updated_at)
    page.etag = pages.etag_of(row)
    for section, (entry_id, definition, content, position) in zip(
        page.sections, created.sections, strict=True
    ):
        section.id = entry_id
        section.definition_name = definition.name
        section.position = position
        if not section.HasField("content"):
            section.content.update(content)  # the definition's default
            section.content.SetInParent()  # even an empty default


def rows_proto(rows: pages.ViewRows) -> pages_pb2.Page:
    """A page from pages.get_page's or pages.load_view's rows (pages.VIEW_COLUMNS)."""
    first = rows[0]
    page = pages_pb2.Page(
        id=first.id,
        environment_id=first.environment_id,
        slug=first.slug,
        title=first.title,
        status=STATUS_FROM_DB[first.status],
        create_time=ts(first.created_at),
        update_time=ts(first.updated_at),
        etag=pages.etag(first.version),
    )
    struct_from_json(first.metadata_json, page.metadata)
    if first.section_id is not None:
        for row in rows:
            section = page.sections.add(
                id=row.section_id,
                definition_id=row.definition_id,
                definition_name=row.definition_name,
                position=row.section_position,
            )
            struct_from_json(row.section_content, section.content)
    return page


def _section_input(section: pages_pb2.Section, field: str) -> pages.SectionInput:
    content: dict[str, Any] | None = None
    size = None
    if section.HasField("content"):
        # Refused before it is even converted.
        size = validation.struct_bytes(
            section.content.ByteSize(), f"{field}.content", max_bytes=pages.MAX_SECTION_BYTES
        )
        content = struct_field_to_json(section, "content", f"{field}.content")
    return pages.SectionInput(
        definition_id=section.definition_id, content=content, field=field, size=size
    )


def _new_page(request: pages_pb2.CreatePageRequest) -> pages.NewPage:
    """A CreatePageRequest (alone, or an item of a batch) as pages.create_pages takes it."""
    p = request.page
    sections = [_section_input(sec, f"page.sections[{i}]") for i, sec in enumerate(p.sections)]
    metadata = struct_field_to_json(p, "metadata", "page.metadata")
    return pages.NewPage(
        slug=p.slug,
        title=p.title,
        status=status_to_db(p.status, "page.status", default="draft") or "draft",
        metadata=metadata,
        sections=sections,
        request_id=request.request_id,
        metadata_size=p.metadata.ByteSize(),
    )


def _batch_item(index: int) -> str:
    return f"requests[{index}]."


class PageServicer(pages_pb2_grpc.PageServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    @contextmanager
    def _write_checked_first(self, check: Callable[[Session], None]) -> Iterator[Session]:
        """A write transaction whose content checks `check` made first, in a read: no schema
        is evaluated while the write lock is held (validation.checked_first)."""
        with validation.checked_first() as checks:
            with self.db.read() as s:
                check(s)
            checks.writing()
            with self.db.write() as s:
                yield s

    def CreateSectionDefinition(
        self, request: pages_pb2.CreateSectionDefinitionRequest, context: grpc.ServicerContext
    ) -> pages_pb2.SectionDefinition:
        d = request.section_definition
        schema = pages.definition_schema(struct_field_to_json(d, "schema", pages.SCHEMA_FIELD))
        default = struct_field_to_json(d, "default_content", "section_definition.default_content")
        with validation.checked_first() as checks:
            pages.check_default(schema, default)
            checks.writing()
            with self.db.write() as s:
                row = pages.create_definition(
                    s, current_principal(), request.environment_id, d.name, schema, default
                )
                return definition_proto(row)

    def GetSectionDefinition(
        self, request: pages_pb2.GetSectionDefinitionRequest, context: grpc.ServicerContext
    ) -> pages_pb2.SectionDefinition:
        with self.db.read() as s:
            return definition_proto(pages.get_definition(s, current_principal(), request.id))

    def ListSectionDefinitions(
        self, request: pages_pb2.ListSectionDefinitionsRequest, context: grpc.ServicerContext
    ) -> pages_pb2.ListSectionDefinitionsResponse:
        page = page_request(request)
        with self.db.read() as s:
            items, token = page_of(
                pages.list_definitions(s, current_principal(), request.environment_id, page),
                page,
                lambda r: r.id,
                definition_proto,
            )
            return pages_pb2.ListSectionDefinitionsResponse(
                section_definitions=items, next_page_token=token
            )

    def UpdateSectionDefinition(
        self, request: pages_pb2.UpdateSectionDefinitionRequest, context: grpc.ServicerContext
    ) -> pages_pb2.SectionDefinition:
        paths = mask_paths(request.update_mask, {"name", "schema", "default_content"})
        d = request.section_definition
        # Converted and checked before the write transaction (NaN or a bad schema never
        # reaches it; nothing slow runs while it holds the lock).
        schema = (
            pages.definition_schema(struct_field_to_json(d, "schema", pages.SCHEMA_FIELD))
            if "schema" in paths
            else None
        )
        default = (
            struct_field_to_json(d, "default_content", "section_definition.default_content")
            if "default_content" in paths
            else None
        )
        with self._write_checked_first(
            lambda r: pages.check_definition_update(r, current_principal(), d.id, schema, default)
        ) as s:
            row = pages.update_definition(
                s,
                current_principal(),
                d.id,
                name=d.name if "name" in paths else None,
                schema=schema,
                default_content=default,
            )
            return definition_proto(row)

    def DeleteSectionDefinition(
        self, request: pages_pb2.DeleteSectionDefinitionRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        with self.db.write() as s:
            pages.delete_definition(s, current_principal(), request.id)
        return empty_pb2.Empty()

    def CreatePage(
        self, request: pages_pb2.CreatePageRequest, context: grpc.ServicerContext
    ) -> pages_pb2.Page:
        item = _new_page(request)
        env = request.environment_id
        with self._write_checked_first(
            lambda r: pages.check_new_pages(r, current_principal(), env, [item])
        ) as s:
            created = pages.create_pages(s, current_principal(), env, [item])
        page = pages_pb2.Page()
        fill_created(page, created[0], request.page)
        return page

    def BatchCreatePages(
        self, request: pages_pb2.BatchCreatePagesRequest, context: grpc.ServicerContext
    ) -> pages_pb2.BatchCreatePagesResponse:
        if not request.requests:
            raise invalid("requests", "is required (at least one page)")
        if len(request.requests) > pages.MAX_PAGES_PER_BATCH:
            raise invalid("requests", f"at most {pages.MAX_PAGES_PER_BATCH} pages per call")
        items = []
        for i, item in enumerate(request.requests):
            if item.environment_id not in ("", request.environment_id):
                raise invalid(
                    f"requests[{i}].environment_id", "must be empty or equal to environment_id"
                )
            try:
                items.append(_new_page(item))
            except InvalidArgument as exc:
                raise exc.within(f"requests[{i}].") from None
        env = request.environment_id
        with self._write_checked_first(
            lambda r: pages.check_new_pages(r, current_principal(), env, items, _batch_item)
        ) as s:
            created = pages.create_pages(s, current_principal(), env, items, _batch_item)
        # Built after the commit (the write lock is not held meanwhile), in place: no copies.
        response = pages_pb2.BatchCreatePagesResponse()
        for one, asked in zip(created, request.requests, strict=True):
            fill_created(response.pages.add(), one, asked.page)
        return response

    def GetPage(
        self, request: pages_pb2.GetPageRequest, context: grpc.ServicerContext
    ) -> pages_pb2.Page:
        with self.db.read_statement() as conn:
            return rows_proto(pages.get_page(conn, current_principal(), request.id))

    def GetPageBySlug(
        self, request: pages_pb2.GetPageBySlugRequest, context: grpc.ServicerContext
    ) -> pages_pb2.Page:
        with self.db.read_statement() as conn:
            return rows_proto(
                pages.get_page_by_slug(
                    conn, current_principal(), request.environment_id, request.slug
                )
            )

    def ListPages(
        self, request: pages_pb2.ListPagesRequest, context: grpc.ServicerContext
    ) -> pages_pb2.ListPagesResponse:
        status = status_to_db(request.status, "status", default=None)
        page = page_request(request)
        with self.db.read() as s:
            items, token = page_of(
                pages.list_pages(s, current_principal(), request.environment_id, status, page),
                page,
                lambda r: r.id,
                page_proto,
            )
            return pages_pb2.ListPagesResponse(pages=items, next_page_token=token)

    def UpdatePage(
        self, request: pages_pb2.UpdatePageRequest, context: grpc.ServicerContext
    ) -> pages_pb2.Page:
        paths = mask_paths(request.update_mask, {"title", "slug", "status", "metadata"})
        p = request.page
        changes: dict[str, Any] = {}
        if "title" in paths:
            changes["title"] = p.title
        if "slug" in paths:
            changes["slug"] = p.slug
        if "status" in paths:
            changes["status"] = status_to_db(p.status, "page.status", default="draft")
        if "metadata" in paths:
            changes["metadata"] = struct_field_to_json(p, "metadata", "page.metadata")
            changes["metadata_size"] = p.metadata.ByteSize()
        with self.db.write() as s:
            row = pages.update_page(s, current_principal(), p.id, changes, p.etag)
            return rows_proto(pages.load_view(s, row.id))

    def DeletePage(
        self, request: pages_pb2.DeletePageRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        with self.db.write() as s:
            pages.delete_page(s, current_principal(), request.id)
        return empty_pb2.Empty()

    def AddSection(
        self, request: pages_pb2.AddSectionRequest, context: grpc.ServicerContext
    ) -> pages_pb2.Page:
        section = _section_input(request.section, "section")
        position = request.position if request.HasField("position") else None
        with self._write_checked_first(
            lambda r: pages.check_added_section(r, current_principal(), request.page_id, section)
        ) as s:
            return rows_proto(
                pages.add_section(s, current_principal(), request.page_id, section, position)
            )

    def UpdateSection(
        self, request: pages_pb2.UpdateSectionRequest, context: grpc.ServicerContext
    ) -> pages_pb2.Page:
        size = validation.struct_bytes(
            request.content.ByteSize(), "content", max_bytes=pages.MAX_SECTION_BYTES
        )
        content = struct_field_to_json(request, "content", "content")
        with self._write_checked_first(
            lambda r: pages.check_section_update(
                r, current_principal(), request.page_id, request.section_id, content
            )
        ) as s:
            return rows_proto(
                pages.update_section(
                    s, current_principal(), request.page_id, request.section_id, content, size
                )
            )

    def MoveSection(
        self, request: pages_pb2.MoveSectionRequest, context: grpc.ServicerContext
    ) -> pages_pb2.Page:
        with self.db.write() as s:
            return rows_proto(
                pages.move_section(
                    s, current_principal(), request.page_id, request.section_id, request.position
                )
            )

    def RemoveSection(
        self, request: pages_pb2.RemoveSectionRequest, context: grpc.ServicerContext
    ) -> pages_pb2.Page:
        with self.db.write() as s:
            return rows_proto(
                pages.remove_section(s, current_principal(), request.page_id, request.section_id)
            )

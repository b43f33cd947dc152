"""SearchService: full-text search over pages and posts."""

from __future__ import annotations

import grpc
from loom.content.v1 import search_pb2, search_pb2_grpc

from content_service import search
from content_service.api.common import STATUS_FROM_DB
from content_service.db.engine import Database
from servicekit.auth import current_principal
from servicekit.errors import invalid
from servicekit.pagination import page_of, page_request

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
KIND_TO_DB = {search_pb2.SEARCH_KIND_PAGE: "page", search_pb2.SEARCH_KIND_POST: "post"}
KIND_FROM_DB = {v: k for k, v in KIND_TO_DB.items()}


def result_proto(hit: search.Hit) -> search_pb2.SearchResult:
    return search_pb2.SearchResult(
        kind=KIND_FROM_DB[hit.kind],
        id=hit.id,
        slug=hit.slug,
        title=hit.title,
        status=STATUS_FROM_DB[hit.status],
        snippet=hit.snippet_html(),
        snippet_parts=[search_pb2.SnippetPart(text=t, match=m) for t, m in hit.snippet_parts()],
        score=hit.score,
    )


def _kinds(values: list[int]) -> list[str]:
    kinds = set()
    for i, value in enumerate(values):
        if value == search_pb2.SEARCH_KIND_UNSPECIFIED:
            return []  # "every kind"
        if value not in KIND_TO_DB:
            raise invalid(f"kinds[{i}]", f"unknown kind {value}")
        kinds.add(KIND_TO_DB[value])  # type: ignore[index]
    return sorted(kinds)


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    def Search(
        self, request: search_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchResponse:
        words = search.words(request.query)
        kinds = _kinds(list(request.kinds))
        page = page_request(request, default_size=DEFAULT_PAGE_SIZE, max_size=MAX_PAGE_SIZE)
        offset = search.offset_of(page)
        with self.db.read() as s:
            hits = search.search(s, current_principal(), request.environment_id, words, kinds, page)
        # The cursor is the offset of the next hit (a page may end early to fit its bytes).
        results, token = page_of(
            list(enumerate(hits, start=offset)),
            page,
            lambda hit: str(hit[0] + 1),
            lambda hit: result_proto(hit[1]),
        )
        return search_pb2.SearchResponse(results=results, next_page_token=token)

"""VectorService servicer: validates requests, checks who may call, converts to and from
protos. The work is done by vector_service.store and vector_service.search."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import numpy as np
from google.protobuf import timestamp_pb2
from loom.vector.v1 import vector_pb2, vector_pb2_grpc

from servicekit.auth import current_principal, require_service
from servicekit.errors import FieldViolation, InvalidArgument, invalid
from servicekit.pagination import MAX_PAGE_BYTES, MAX_PAGE_SIZE, page_of, page_request
from vector_service import store
from vector_service.embeddings import Embedder
from vector_service.errors import embed
from vector_service.gauges import collection_label
from vector_service.metrics import SEARCH_SECONDS, UPSERTED_DOCUMENTS
from vector_service.search import Hit, Mode, Query, Searcher
from vector_service.store import rows
from vector_service.tier import SearchTier, TierStats

# Work per call, bounded so that a call at every limit at once finishes well within its
# deadline on a small machine (docs/vector.md, "Limits per call"; measured with the local
# MiniLM on 2 shared cores). A model's cost is per token, up to what it reads of a text (the
# local model: 256 tokens, about 1,200 characters), so the characters of a whole call bound it.
MAX_TEXT_CHARS = 100_000  # one document's text (content_service sends at most this)
MAX_UPSERT_CHARS = 64_000  # the texts of one UpsertDocuments
MAX_QUERY_CHARS = 10_000
MAX_EMBED_TEXTS = 64
MAX_EMBED_TEXT_CHARS = 8_000
MAX_EMBED_CHARS = 16_000  # the texts of one EmbedTexts
MAX_DOCUMENTS = 1000
DEFAULT_LIMIT = 10
MAX_LIMIT = 100

COLLECTIONS = {
    vector_pb2.COLLECTION_PAGES: store.Collection.PAGES,
    vector_pb2.COLLECTION_SECTIONS: store.Collection.SECTIONS,
    vector_pb2.COLLECTION_IMAGES: store.Collection.IMAGES,
    vector_pb2.COLLECTION_POSTS: store.Collection.POSTS,
}
COLLECTION_PROTOS = {v: k for k, v in COLLECTIONS.items()}
MODES = {
    vector_pb2.SEARCH_MODE_VECTOR: Mode.VECTOR,
    vector_pb2.SEARCH_MODE_FULL_TEXT: Mode.FULL_TEXT,
    vector_pb2.SEARCH_MODE_HYBRID: Mode.HYBRID,
}
MODE_PROTOS = {v: k for k, v in MODES.items()}
INDEX_STATES = {
    store.VectorIndexState.UNSPECIFIED: vector_pb2.VECTOR_INDEX_STATE_UNSPECIFIED,
    store.VectorIndexState.NOT_NEEDED: vector_pb2.VECTOR_INDEX_STATE_NOT_NEEDED,
    store.VectorIndexState.PENDING: vector_pb2.VECTOR_INDEX_STATE_PENDING,
    store.VectorIndexState.PARTIAL: vector_pb2.VECTOR_INDEX_STATE_PARTIAL,
    store.VectorIndexState.READY: vector_pb2.VECTOR_INDEX_STATE_READY,
}
REINDEX_STATES = {
    store.ReindexState.UNSPECIFIED: vector_pb2.ReindexProgress.STATE_UNSPECIFIED,
    store.ReindexState.RUNNING: vector_pb2.ReindexProgress.STATE_RUNNING,
    store.ReindexState.SUCCEEDED: vector_pb2.ReindexProgress.STATE_SUCCEEDED,
    store.ReindexState.FAILED: vector_pb2.ReindexProgress.STATE_FAILED,
}


# ---------------------------------------------------------------------------- validation


def collection_of(value: int, field: str) -> store.Collection:
    try:
        return COLLECTIONS[value]  # type: ignore[index]
    except KeyError:
        raise invalid(field, "must name a collection (COLLECTION_PAGES, ...)") from None


def check_id(value: str, field: str, violations: list[FieldViolation], *, required: bool) -> None:
    if not value:
        if required:
            violations.append(FieldViolation(field, "is required"))
        return
    if not store.ID_PATTERN.match(value):
        violations.append(FieldViolation(field, "must be 1-256 characters from [A-Za-z0-9._:/@-]"))


def check_text(value: str, field: str, limit: int, violations: list[FieldViolation]) -> None:
    if not value.strip():
        violations.append(FieldViolation(field, "must not be empty"))
    elif len(value) > limit:
        violations.append(FieldViolation(field, f"must be at most {limit} characters"))


def check_total(texts: list[str], field: str, limit: int, violations: list[FieldViolation]) -> None:
    total = sum(len(t) for t in texts)
    if total > limit:
        violations.append(
            FieldViolation(
                field,
                f"the texts of one call must be at most {limit} characters in all (these are "
                f"{total}); send fewer per call",
            )
        )


def raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)


def scope_of(
    scope: vector_pb2.Scope, field: str, violations: list[FieldViolation], *, full: bool
) -> store.Scope:
    check_id(scope.team_id, f"{field}.team_id", violations, required=True)
    check_id(scope.site_id, f"{field}.site_id", violations, required=full)
    check_id(scope.environment_id, f"{field}.environment_id", violations, required=full)
    return store.Scope(scope.team_id, scope.site_id, scope.environment_id)


# ---------------------------------------------------------------------------- conversions


def ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return out


def time_of(seconds: float) -> timestamp_pb2.Timestamp | None:
    return ts(datetime.fromtimestamp(seconds, UTC)) if seconds else None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def fill_document(out: vector_pb2.Document, row: dict[str, Any]) -> None:
    """Sets `out` (a message in place: measured here, a third of the time of building it and
    copying it into its parent) from a stored row (RESULT_COLUMNS; a listing's lacks the text
    and update time)."""
    out.id = row[rows.ID_COLUMN]
    scope = out.scope
    scope.team_id, scope.site_id, scope.environment_id = (row[c] for c in rows.SCOPE_COLUMNS)
    out.source_id = row[rows.SOURCE_COLUMN]
    out.text = row.get(rows.TEXT_COLUMN, "")
    out.text_sha256 = row[rows.SHA_COLUMN]
    out.model = row[rows.MODEL_COLUMN]
    updated: datetime | None = row.get(rows.UPDATED_COLUMN)
    if updated is not None:
        micros = (updated if updated.tzinfo else updated.replace(tzinfo=UTC)) - _EPOCH
        whole = micros // _MICROSECOND
        out.update_time.seconds, rest = divmod(whole, 1_000_000)
        out.update_time.nanos = rest * 1000


def document_proto(row: dict[str, Any]) -> vector_pb2.Document:
    out = vector_pb2.Document()
    fill_document(out, row)
    return out


def add_hit(response: vector_pb2.SearchResponse, hit: Hit) -> None:
    result = response.results.add(collection=COLLECTION_PROTOS[hit.collection], score=hit.score)
    fill_document(result.document, hit.row)
    if hit.vector_distance is not None:
        result.vector_distance = hit.vector_distance
    if hit.text_score is not None:
        result.text_score = hit.text_score


def progress_proto(progress: store.ReindexProgress) -> vector_pb2.ReindexProgress:
    return vector_pb2.ReindexProgress(
        state=REINDEX_STATES[progress.state],
        source_model=progress.source_model,
        source_dimensions=progress.source_dimensions,
        target_model=progress.target_model,
        target_dimensions=progress.target_dimensions,
        total_rows=progress.total_rows,
        done_rows=progress.done_rows,
        start_time=time_of(progress.start_time),
        end_time=time_of(progress.end_time),
        error=progress.error,
        target_table=progress.target_table,
    )


def tier_proto(stats: TierStats) -> vector_pb2.SearchTierStats:
    return vector_pb2.SearchTierStats(
        teams=stats.teams,
        partitioned_teams=stats.partitioned_teams,
        rows=stats.rows,
        resident_bytes=stats.resident_bytes,
        loading=stats.loading,
        hits=stats.hits,
        misses=stats.misses,
        loads=stats.loads,
        evictions=stats.evictions,
        invalidations=stats.invalidations,
        max_bytes=stats.max_bytes,
        total_resident_bytes=stats.total_resident_bytes,
        peak_resident_bytes=stats.peak_resident_bytes,
        exact_max_rows=stats.exact_max_rows,
    )


def stats_proto(stats: store.CollectionStats, tier: TierStats) -> vector_pb2.CollectionStats:
    return vector_pb2.CollectionStats(
        collection=COLLECTION_PROTOS[stats.collection],
        table_name=stats.table_name,
        exists=stats.exists,
        row_count=stats.row_count,
        model=stats.space.model if stats.space else "",
        dimensions=stats.space.dimensions if stats.space else 0,
        configured_model=stats.configured.model,
        configured_dimensions=stats.configured.dimensions,
        model_matches=stats.model_matches,
        table_version=stats.table_version,
        fragment_count=stats.fragment_count,
        small_fragment_count=stats.small_fragment_count,
        vector_index_state=INDEX_STATES[stats.vector_index_state],
        index_threshold_rows=stats.index_threshold_rows,
        indexes=[
            vector_pb2.IndexInfo(
                name=i.name,
                index_type=i.index_type,
                columns=i.columns,
                indexed_rows=i.indexed_rows,
                unindexed_rows=i.unindexed_rows,
            )
            for i in stats.indexes
        ],
        reindex=progress_proto(stats.reindex),
        search_tier=tier_proto(tier),
    )


# ------------------------------------------------------------------------------ servicer


class VectorServicer(vector_pb2_grpc.VectorServiceServicer):
    def __init__(
        self,
        vectors: store.VectorStore,
        searcher: Searcher,
        embedder: Embedder,
        tier: SearchTier,
    ) -> None:
        self.store = vectors
        self.searcher = searcher
        self.embedder = embedder
        self.tier = tier

    def _stats(self, collection: store.Collection) -> vector_pb2.CollectionStats:
        return stats_proto(self.store.stats(collection), self.tier.stats(collection))

    def EmbedTexts(
        self, request: vector_pb2.EmbedTextsRequest, context: grpc.ServicerContext
    ) -> vector_pb2.EmbedTextsResponse:
        current_principal()  # any authenticated caller
        texts = list(request.texts)
        if not texts or len(texts) > MAX_EMBED_TEXTS:
            raise invalid("texts", f"must hold 1-{MAX_EMBED_TEXTS} texts")
        violations: list[FieldViolation] = []
        for i, text in enumerate(texts):
            check_text(text, f"texts[{i}]", MAX_EMBED_TEXT_CHARS, violations)
        check_total(texts, "texts", MAX_EMBED_CHARS, violations)
        raise_if(violations)
        vectors = embed(self.embedder, texts)
        return vector_pb2.EmbedTextsResponse(
            embeddings=[vector_pb2.Embedding(values=row.tolist()) for row in vectors],
            model=self.embedder.model,
            dimensions=self.embedder.dimensions,
        )

    def UpsertDocuments(
        self, request: vector_pb2.UpsertDocumentsRequest, context: grpc.ServicerContext
    ) -> vector_pb2.UpsertDocumentsResponse:
        require_service(current_principal())
        collection = collection_of(request.collection, "collection")
        if not request.documents or len(request.documents) > MAX_DOCUMENTS:
            raise invalid("documents", f"must hold 1-{MAX_DOCUMENTS} documents")
        violations: list[FieldViolation] = []
        docs: list[store.Document] = []
        seen: dict[str, int] = {}
        for i, doc in enumerate(request.documents):
            field = f"documents[{i}]"
            check_id(doc.id, f"{field}.id", violations, required=True)
            if doc.id in seen:
                violations.append(
                    FieldViolation(f"{field}.id", f"repeats documents[{seen[doc.id]}].id")
                )
            seen.setdefault(doc.id, i)
            scope = scope_of(doc.scope, f"{field}.scope", violations, full=True)
            check_id(doc.source_id, f"{field}.source_id", violations, required=False)
            check_text(doc.text, f"{field}.text", MAX_TEXT_CHARS, violations)
            if len(violations) >= 20:
                break  # enough to act on; the rest would only cost time
            docs.append(
                store.Document(
                    id=doc.id,
                    team_id=scope.team_id,
                    site_id=scope.site_id,
                    environment_id=scope.environment_id,
                    source_id=doc.source_id,
                    text=doc.text,
                )
            )
        check_total([d.text for d in request.documents], "documents", MAX_UPSERT_CHARS, violations)
        raise_if(violations)
        outcome = self.store.upsert(collection, docs, self.embedder)
        label = collection_label(collection)
        for name, count in (
            ("created", outcome.created),
            ("updated", outcome.updated),
            ("unchanged", outcome.unchanged),
        ):
            UPSERTED_DOCUMENTS.labels(label, name).inc(count)
        return vector_pb2.UpsertDocumentsResponse(
            created_count=outcome.created,
            updated_count=outcome.updated,
            unchanged_count=outcome.unchanged,
            embedded_count=outcome.embedded,
            model=outcome.space.model,
            dimensions=outcome.space.dimensions,
        )

    def DeleteDocuments(
        self, request: vector_pb2.DeleteDocumentsRequest, context: grpc.ServicerContext
    ) -> vector_pb2.DeleteDocumentsResponse:
        require_service(current_principal())
        collection = collection_of(request.collection, "collection")
        violations: list[FieldViolation] = []
        scope = scope_of(request.scope, "scope", violations, full=False)
        ids = list(request.ids)
        if [bool(ids), bool(request.source_id), request.all_in_scope].count(True) != 1:
            violations.append(
                FieldViolation("ids", "set exactly one of ids, source_id and all_in_scope")
            )
        elif request.all_in_scope and not scope.environment_id:
            violations.append(
                FieldViolation("scope.environment_id", "all_in_scope needs an environment")
            )
        if len(ids) > MAX_DOCUMENTS:
            violations.append(FieldViolation("ids", f"at most {MAX_DOCUMENTS} ids"))
        for i, doc_id in enumerate(ids):
            check_id(doc_id, f"ids[{i}]", violations, required=True)
        check_id(request.source_id, "source_id", violations, required=False)
        raise_if(violations)
        deleted = self.store.delete(collection, scope, ids, request.source_id)
        return vector_pb2.DeleteDocumentsResponse(deleted_count=deleted)

    def ListDocuments(
        self, request: vector_pb2.ListDocumentsRequest, context: grpc.ServicerContext
    ) -> vector_pb2.ListDocumentsResponse:
        require_service(current_principal())
        collection = collection_of(request.collection, "collection")
        violations: list[FieldViolation] = []
        scope = scope_of(request.scope, "scope", violations, full=False)
        check_id(request.source_id, "source_id", violations, required=False)
        raise_if(violations)
        page = page_request(request, default_size=MAX_PAGE_SIZE)
        listed = self.store.list_documents(
            collection, scope, request.source_id, page.after, page.size + 1
        )
        documents, token = page_of(
            listed, page, lambda row: str(row[rows.ID_COLUMN]), document_proto
        )
        return vector_pb2.ListDocumentsResponse(documents=documents, next_page_token=token)

    def Search(
        self, request: vector_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> vector_pb2.SearchResponse:
        principal = current_principal()
        violations: list[FieldViolation] = []
        collections: list[store.Collection] = []
        if not request.collections:
            violations.append(FieldViolation("collections", "name at least one collection"))
        for i, value in enumerate(request.collections):
            if value not in COLLECTIONS:
                violations.append(FieldViolation(f"collections[{i}]", "unknown collection"))
            elif COLLECTIONS[value] in collections:
                violations.append(FieldViolation(f"collections[{i}]", "repeats a collection"))
            else:
                collections.append(COLLECTIONS[value])
        team = principal.team_for(request.scope.team_id, "search")
        scope_request = vector_pb2.Scope(
            team_id=team,
            site_id=request.scope.site_id,
            environment_id=request.scope.environment_id,
        )
        scope = scope_of(scope_request, "scope", violations, full=False)
        text = request.query_text
        if text and len(text) > MAX_QUERY_CHARS:
            violations.append(
                FieldViolation("query_text", f"must be at most {MAX_QUERY_CHARS} characters")
            )
        vector = None
        if request.query_vector:
            vector = np.asarray(request.query_vector, dtype=np.float32)
            if not np.isfinite(vector).all() or not np.any(vector):
                violations.append(
                    FieldViolation("query_vector", "must be finite and not all zeros")
                )
        if request.mode == vector_pb2.SEARCH_MODE_UNSPECIFIED:
            mode = Mode.HYBRID if text.strip() else Mode.VECTOR
        elif request.mode in MODES:
            mode = MODES[request.mode]
        else:
            violations.append(FieldViolation("mode", "unknown mode"))
            mode = Mode.VECTOR
        if mode in (Mode.FULL_TEXT, Mode.HYBRID) and not text.strip():
            violations.append(FieldViolation("query_text", f"is required for {mode.name}"))
        if mode is Mode.VECTOR and vector is None and not text.strip():
            violations.append(FieldViolation("query_text", "set query_text or query_vector"))
        if request.limit < 0 or request.limit > MAX_LIMIT:
            violations.append(FieldViolation("limit", f"must be 0-{MAX_LIMIT} (0 = default)"))
        raise_if(violations)
        started = time.perf_counter()
        hits = self.searcher.search(
            Query(
                collections=collections,
                scope=scope,
                text=text,
                vector=vector,
                vector_model=request.query_vector_model,
                mode=mode,
                limit=request.limit or DEFAULT_LIMIT,
            )
        )
        # Filled in place (a third of building each result alone), and only the best results
        # that fit a response (each carries its text, up to MAX_TEXT_CHARS): a default client
        # receives at most 4 MiB.
        response = vector_pb2.SearchResponse(mode=MODE_PROTOS[mode])
        used = 0
        for hit in hits:
            add_hit(response, hit)
            used += response.results[-1].ByteSize() + 8
            if used > MAX_PAGE_BYTES and len(response.results) > 1:
                del response.results[-1]
                break
        SEARCH_SECONDS.labels(mode.value).observe(time.perf_counter() - started)
        return response

    def GetCollectionStats(
        self, request: vector_pb2.GetCollectionStatsRequest, context: grpc.ServicerContext
    ) -> vector_pb2.GetCollectionStatsResponse:
        require_service(current_principal())
        collection = collection_of(request.collection, "collection")
        return vector_pb2.GetCollectionStatsResponse(stats=self._stats(collection))

    def Optimize(
        self, request: vector_pb2.OptimizeRequest, context: grpc.ServicerContext
    ) -> vector_pb2.OptimizeResponse:
        require_service(current_principal())
        chosen = [
            collection_of(value, f"collections[{i}]") for i, value in enumerate(request.collections)
        ] or list(store.Collection)
        out = []
        for collection in dict.fromkeys(chosen):
            self.store.optimize(collection)
            out.append(self._stats(collection))
        return vector_pb2.OptimizeResponse(collections=out)

    def Reindex(
        self, request: vector_pb2.ReindexRequest, context: grpc.ServicerContext
    ) -> vector_pb2.ReindexResponse:
        require_service(current_principal())
        collection = collection_of(request.collection, "collection")
        progress = self.store.reindex(collection, self.embedder)
        return vector_pb2.ReindexResponse(progress=progress_proto(progress))

"""The LanceDB side of the vector service: one table per collection, writes, indexes,
maintenance and reindexing.

Rules this module keeps:

- Every write to a collection's tables happens under that collection's lock: measured here,
  concurrent `merge_insert` of the same new keys from several writers silently made duplicate
  rows. Index builds, compaction and the reindex swap take the same lock. Searches never do.
- A table records the provider, model and dimensions of its vectors in its Arrow schema
  metadata, written when it is created. A write or vector search that would mix them with the
  configured model fails with FAILED_PRECONDITION naming the Reindex RPC.
- Which physical table holds a collection is recorded in a small catalog table
  (`_loom_catalog`) beside them, not in a local file, so the whole database can live at an
  object-store URI. Generation 1 is the plain name (`page_embeddings`); a reindex builds
  `page_embeddings__g2` and the catalog swaps to it (LanceDB OSS cannot rename tables).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from functools import cached_property
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import FTS, BTree, IvfSq
from numpy.typing import NDArray

from servicekit.errors import Aborted, FailedPrecondition, ServiceError
from vector_service.embeddings import Embedder
from vector_service.errors import embed, model_mismatch

log = logging.getLogger(__name__)


class Collection(StrEnum):
    """A collection and the name of its first-generation LanceDB table."""

    PAGES = "page_embeddings"
    SECTIONS = "section_embeddings"
    IMAGES = "image_embeddings"
    POSTS = "post_embeddings"

    @property
    def api_name(self) -> str:
        return _API_NAMES[self]


_API_NAMES = {
    Collection.PAGES: "COLLECTION_PAGES",
    Collection.SECTIONS: "COLLECTION_SECTIONS",
    Collection.IMAGES: "COLLECTION_IMAGES",
    Collection.POSTS: "COLLECTION_POSTS",
}

CATALOG_TABLE = "_loom_catalog"
VECTOR_COLUMN = "vector"
TEXT_INDEX_COLUMN = "text"
# text_sha256: an upsert looks up texts already embedded under other ids (see upsert).
SCALAR_INDEX_COLUMNS = (
    "id",
    "team_id",
    "site_id",
    "environment_id",
    "source_id",
    "text_sha256",
)
# What an upsert compares with the stored row.
STORED_COLUMNS = [
    "id",
    "team_id",
    "site_id",
    "environment_id",
    "source_id",
    "text_sha256",
    "model",
]
# Searches return these (never the vector).
RESULT_COLUMNS = [
    "id",
    "team_id",
    "site_id",
    "environment_id",
    "source_id",
    "text",
    "text_sha256",
    "model",
    "updated_at",
]
# Versions older than this are pruned by optimize(). Never 0: a search still reading an older
# version would lose its files.
PRUNE_OLDER_THAN = timedelta(minutes=30)
# A replaced table is dropped this long after a reindex swap, when no search can still be
# reading it.
RETIRE_AFTER_SECONDS = 60.0
REINDEX_CHUNK = 256
_META_PROVIDER = b"loom.provider"
_META_MODEL = b"loom.model"
_META_DIMENSIONS = b"loom.dimensions"
# Ids and scope ids end up inside SQL filter literals: a strict alphabet (no quotes), and the
# literal is escaped anyway.
ID_PATTERN = re.compile(r"^[A-Za-z0-9._:/@-]{1,256}$")


@dataclass(frozen=True)
class VectorSpace:
    """What makes vectors comparable: the model and its dimensions (provider is kept so an old
    table's model can be loaded again to search it during a reindex)."""

    provider: str
    model: str
    dimensions: int

    @classmethod
    def of(cls, embedder: Embedder) -> VectorSpace:
        return cls(embedder.name, embedder.model, embedder.dimensions)

    def same_vectors(self, other: VectorSpace) -> bool:
        return self.model == other.model and self.dimensions == other.dimensions


@dataclass(frozen=True)
class Scope:
    team_id: str
    site_id: str = ""
    environment_id: str = ""

    def sql(self) -> str:
        parts = [f"team_id = {quote(self.team_id)}"]
        if self.site_id:
            parts.append(f"site_id = {quote(self.site_id)}")
        if self.environment_id:
            parts.append(f"environment_id = {quote(self.environment_id)}")
        return " AND ".join(parts)


@dataclass(frozen=True)
class Document:
    id: str
    team_id: str
    site_id: str
    environment_id: str
    source_id: str
    text: str

    @cached_property
    def sha256(self) -> str:
        return text_sha256(self.text)


@dataclass(frozen=True)
class UpsertOutcome:
    created: int
    updated: int
    unchanged: int
    embedded: int
    space: VectorSpace


class ReindexState(Enum):
    UNSPECIFIED = "unspecified"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass
class ReindexProgress:
    state: ReindexState = ReindexState.UNSPECIFIED
    source_model: str = ""
    source_dimensions: int = 0
    target_model: str = ""
    target_dimensions: int = 0
    total_rows: int = 0
    done_rows: int = 0
    start_time: float = 0.0
    end_time: float = 0.0
    error: str = ""
    target_table: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        data["state"] = self.state.value
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ReindexProgress:
        if not text:
            return cls()
        data = json.loads(text)
        data["state"] = ReindexState(data.get("state", "unspecified"))
        return cls(**data)

    def copy(self) -> ReindexProgress:
        return ReindexProgress(**asdict(self))


@dataclass
class IndexSummary:
    name: str
    index_type: str
    columns: list[str]
    indexed_rows: int
    unindexed_rows: int


class VectorIndexState(Enum):
    UNSPECIFIED = "unspecified"
    NOT_NEEDED = "not_needed"
    PENDING = "pending"
    PARTIAL = "partial"
    READY = "ready"


@dataclass
class CollectionStats:
    collection: Collection
    table_name: str
    exists: bool
    row_count: int
    space: VectorSpace | None
    configured: VectorSpace
    table_version: int
    fragment_count: int
    small_fragment_count: int
    vector_index_state: VectorIndexState
    index_threshold_rows: int
    indexes: list[IndexSummary]
    reindex: ReindexProgress

    @property
    def model_matches(self) -> bool:
        return self.space is None or self.space.same_vectors(self.configured)


@dataclass(frozen=True)
class TableHandle:
    name: str
    table: Any  # lancedb.table.LanceTable (the package has no type information)
    space: VectorSpace


@dataclass(frozen=True)
class ReadView:
    """What a search reads: the collection's current table (immutable snapshot of the handle;
    a reindex swap replaces the handle, it never changes one)."""

    collection: Collection
    handle: TableHandle
    has_vector_index: bool


@dataclass
class StoreOptions:
    index_threshold_rows: int = 50_000
    index_partition_rows: int = 4096
    nprobes: int = 40
    refine_factor: int = 5
    maintenance_writes: int = 100
    maintenance_seconds: float = 30.0


@dataclass
class _CollectionState:
    collection: Collection
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: TableHandle | None = None
    generation: int = 0
    staging: TableHandle | None = None
    progress: ReindexProgress = field(default_factory=ReindexProgress)
    reindex_thread: threading.Thread | None = None
    pending_writes: int = 0
    first_pending_at: float = 0.0
    # Table version at which the full-text index last covered every row.
    text_index_version: int = -1
    has_vector_index: bool = False
    retired: list[tuple[str, float]] = field(default_factory=list)


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _in_list(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(quote(v) for v in values)})"


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def table_schema(space: VectorSpace) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("team_id", pa.string(), nullable=False),
            pa.field("site_id", pa.string(), nullable=False),
            pa.field("environment_id", pa.string(), nullable=False),
            pa.field("source_id", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("text_sha256", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), space.dimensions), nullable=False),
            pa.field("updated_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ],
        metadata={
            _META_PROVIDER: space.provider.encode(),
            _META_MODEL: space.model.encode(),
            _META_DIMENSIONS: str(space.dimensions).encode(),
        },
    )


def _space_of(table: Any) -> VectorSpace:
    schema: pa.Schema = table.schema
    meta = schema.metadata or {}
    field_type = schema.field(VECTOR_COLUMN).type
    dimensions = int(meta.get(_META_DIMENSIONS, b"0")) or int(field_type.list_size)
    return VectorSpace(
        provider=meta.get(_META_PROVIDER, b"").decode(),
        # A table without our metadata has an unknown model: it never matches, so it must be
        # reindexed before use rather than guessed at.
        model=meta.get(_META_MODEL, b"<unrecorded>").decode(),
        dimensions=dimensions,
    )


def _rows_table(
    schema: pa.Schema,
    docs: Sequence[Document],
    vectors: NDArray[np.float32],
    model: str,
    now: datetime,
) -> pa.Table:
    dimensions = schema.field(VECTOR_COLUMN).type.list_size
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
    columns: list[pa.Array] = [
        pa.array([d.id for d in docs], pa.string()),
        pa.array([d.team_id for d in docs], pa.string()),
        pa.array([d.site_id for d in docs], pa.string()),
        pa.array([d.environment_id for d in docs], pa.string()),
        pa.array([d.source_id for d in docs], pa.string()),
        pa.array([d.text for d in docs], pa.string()),
        pa.array([d.sha256 for d in docs], pa.string()),
        pa.array([model] * len(docs), pa.string()),
        pa.FixedSizeListArray.from_arrays(flat, dimensions),
        pa.array([now] * len(docs), pa.timestamp("us", tz="UTC")),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _vectors_of(column: pa.ChunkedArray, dimensions: int) -> NDArray[np.float32]:
    if len(column) == 0:
        return np.empty((0, dimensions), dtype=np.float32)
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(-1, dimensions)


class VectorStore:
    """Owns the LanceDB connection and every collection's tables. Thread-safe."""

    def __init__(self, uri: str, configured: VectorSpace, options: StoreOptions) -> None:
        self.uri = uri
        self.configured = configured
        self.options = options
        self._db = lancedb.connect(uri)
        self._catalog_lock = threading.Lock()
        self._catalog = self._open_catalog()
        self._states = {c: _CollectionState(c) for c in Collection}
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._maintenance: threading.Thread | None = None
        self._load()

    # ---------------------------------------------------------------- opening and catalog

    def _table_names(self) -> list[str]:
        names: list[str] = []
        token: str | None = None
        while True:
            page = self._db.list_tables(page_token=token)
            names.extend(page.tables)
            token = page.page_token
            if not token:
                return names

    def _open_catalog(self) -> Any:
        schema = pa.schema(
            [
                pa.field("collection", pa.string(), nullable=False),
                pa.field("active_table", pa.string(), nullable=False),
                pa.field("generation", pa.int64(), nullable=False),
                pa.field("reindex", pa.string(), nullable=False),
                pa.field("updated_at", pa.timestamp("us", tz="UTC"), nullable=False),
            ]
        )
        return self._db.create_table(CATALOG_TABLE, schema=schema, exist_ok=True)

    def _write_catalog(self, state: _CollectionState) -> None:
        row = pa.Table.from_pylist(
            [
                {
                    "collection": state.collection.value,
                    "active_table": state.active.name if state.active else "",
                    "generation": state.generation,
                    "reindex": state.progress.to_json(),
                    "updated_at": datetime.now(UTC),
                }
            ],
            schema=self._catalog.schema,
        )
        with self._catalog_lock:
            (
                self._catalog.merge_insert("collection")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(row)
            )

    def _load(self) -> None:
        names = set(self._table_names())
        catalog = self._catalog.search().limit(None).to_arrow().to_pylist()
        rows = {r["collection"]: r for r in catalog}
        for collection, state in self._states.items():
            row = rows.get(collection.value)
            active_name = ""
            if row is not None:
                active_name = row["active_table"]
                state.generation = int(row["generation"])
                state.progress = ReindexProgress.from_json(row["reindex"])
            else:
                # Tables without a catalog row (the catalog is newer, or was lost): adopt the
                # latest generation.
                found = sorted(
                    (self._generation_of(name, collection), name)
                    for name in names
                    if self._belongs_to(name, collection)
                )
                if found:
                    state.generation, active_name = found[-1]
            if active_name and active_name not in names:
                log.error("catalog names table %s for %s; it is missing", active_name, collection)
                active_name = ""
            if active_name:
                table = self._db.open_table(active_name)
                state.active = TableHandle(active_name, table, _space_of(table))
                state.has_vector_index = self._has_vector_index(table)
                if not state.active.space.same_vectors(self.configured):
                    log.warning("%s", self._mismatch(state.active).message)
            if state.progress.state is ReindexState.RUNNING:
                state.progress.state = ReindexState.FAILED
                state.progress.error = "interrupted by a restart; call Reindex again"
                state.progress.end_time = time.time()
            for name in names:
                if self._belongs_to(name, collection) and name != active_name:
                    log.warning("dropping leftover table %s of %s", name, collection)
                    self._db.drop_table(name)
            if row is not None or state.active is not None:
                self._write_catalog(state)

    @staticmethod
    def _generation_of(name: str, collection: Collection) -> int:
        suffix = name.removeprefix(collection.value + "__g")
        return int(suffix) if suffix != name and suffix.isdigit() else 1

    @staticmethod
    def _belongs_to(name: str, collection: Collection) -> bool:
        return name == collection.value or name.startswith(collection.value + "__g")

    def _create_table(self, name: str, space: VectorSpace) -> TableHandle:
        if name in self._table_names():
            self._db.drop_table(name)
        table = self._db.create_table(name, schema=table_schema(space))
        # Scalar indexes for the scope filters and id lookups, and the full-text index; made
        # while the table is empty they cost nothing, and optimize() keeps them current.
        for column in SCALAR_INDEX_COLUMNS:
            table.create_index(column, config=BTree(), replace=True)
        table.create_index(TEXT_INDEX_COLUMN, config=FTS(), replace=True)
        log.info("created table %s (%s, %d dimensions)", name, space.model, space.dimensions)
        return TableHandle(name, table, space)

    # ---------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._maintenance is None:
            self._maintenance = threading.Thread(
                target=self._maintenance_loop, name="vector-maintenance", daemon=True
            )
            self._maintenance.start()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._maintenance is not None:
            self._maintenance.join(timeout=60)
        for state in self._states.values():
            thread = state.reindex_thread
            if thread is not None:
                thread.join(timeout=60)
            with state.lock:
                self._drop_retired(state, force=True)

    # ------------------------------------------------------------------------------ writes

    def _write_targets(self, state: _CollectionState, space: VectorSpace) -> list[TableHandle]:
        """The tables an upsert writes, under the collection lock. During a reindex: the new
        table, plus the old one when it has the same model (so searches see the write)."""
        if state.staging is not None:
            targets = [state.staging]
            if state.active is not None and state.active.space.same_vectors(space):
                targets.append(state.active)
            return targets
        if state.active is None:
            state.generation = max(state.generation, 1)
            name = self._physical_name(state.collection, state.generation)
            state.active = self._create_table(name, space)
            state.has_vector_index = False
            self._write_catalog(state)
            return [state.active]
        if not state.active.space.same_vectors(space):
            raise self._mismatch(state.active)
        return [state.active]

    def _mismatch(self, handle: TableHandle) -> FailedPrecondition:
        collection = next(c for c in Collection if self._belongs_to(handle.name, c))
        return model_mismatch(
            handle.name,
            collection.api_name,
            handle.space.model,
            handle.space.dimensions,
            self.configured.model,
            self.configured.dimensions,
        )

    @staticmethod
    def _physical_name(collection: Collection, generation: int) -> str:
        return collection.value if generation <= 1 else f"{collection.value}__g{generation}"

    @staticmethod
    def _read_rows(table: Any, where: str | None, columns: list[str]) -> pa.Table:
        query = table.search()
        if where is not None:
            query = query.where(where)
        result: pa.Table = query.select(columns).limit(None).to_arrow()
        return result

    def upsert(
        self, collection: Collection, docs: Sequence[Document], embedder: Embedder
    ) -> UpsertOutcome:
        """Inserts or replaces documents. The whole call runs under the collection lock, model
        call included: upserts of one collection are processed one at a time, which is what
        makes "same id + same text = no model call, no new row" exact under concurrency."""
        space = VectorSpace.of(embedder)
        state = self._states[collection]
        with state.lock:
            targets = self._write_targets(state, space)
            primary = targets[0]
            existing = self._read_rows(
                primary.table, _in_list("id", [d.id for d in docs]), STORED_COLUMNS
            )
            stored = {row["id"]: row for row in existing.to_pylist()}
            unchanged = created = updated = 0
            to_write: list[Document] = []
            texts: dict[str, str] = {}  # sha -> text, each distinct text looked up or embedded once
            for doc in docs:
                row = stored.get(doc.id)
                if row is None:
                    created += 1
                elif (
                    row["text_sha256"] == doc.sha256
                    and row["model"] == primary.space.model
                    and row["team_id"] == doc.team_id
                    and row["site_id"] == doc.site_id
                    and row["environment_id"] == doc.environment_id
                    and row["source_id"] == doc.source_id
                ):
                    unchanged += 1
                    continue
                else:
                    updated += 1
                to_write.append(doc)
                texts.setdefault(doc.sha256, doc.text)
            missing: list[str] = []
            if to_write:
                # A document whose text did not change (new scope or source only) finds its
                # own stored vector here, like any text held under another id.
                by_sha = self._known_vectors(primary, texts)
                missing = [sha for sha in texts if sha not in by_sha]
                if missing:
                    fresh = embed(embedder, [texts[sha] for sha in missing])
                    by_sha.update(zip(missing, fresh, strict=True))
                vectors = np.stack([by_sha[d.sha256] for d in to_write])
                now = datetime.now(UTC)
                for target in targets:
                    batch = _rows_table(target.table.schema, to_write, vectors, space.model, now)
                    (
                        target.table.merge_insert("id")
                        .when_matched_update_all()
                        .when_not_matched_insert_all()
                        .execute(batch)
                    )
                self._note_writes(state, len(to_write))
            return UpsertOutcome(created, updated, unchanged, len(missing), primary.space)

    def _known_vectors(
        self, handle: TableHandle, shas: Iterable[str]
    ) -> dict[str, NDArray[np.float32]]:
        """Vectors the table already holds for these texts (by sha256, same model), under
        any id and in any tenant: a vector is a function of the text and the model alone, so
        a cloned environment or a section repeated across pages costs no model call."""
        wanted = list(shas)
        if not wanted:
            return {}
        where = f"{_in_list('text_sha256', wanted)} AND model = {quote(handle.space.model)}"
        rows = self._read_rows(handle.table, where, ["text_sha256", VECTOR_COLUMN])
        vectors = _vectors_of(rows.column(VECTOR_COLUMN), handle.space.dimensions)
        return dict(zip(rows.column("text_sha256").to_pylist(), vectors, strict=True))

    def delete(
        self, collection: Collection, scope: Scope, ids: Sequence[str], source_id: str
    ) -> int:
        """Deletes by ids, by source id, or (neither given) everything within the scope.
        Allowed whatever the model: it mixes nothing, and keeps the index consistent with the
        content."""
        where = scope.sql()
        if ids:
            where += f" AND {_in_list('id', ids)}"
        elif source_id:
            where += f" AND source_id = {quote(source_id)}"
        state = self._states[collection]
        with state.lock:
            deleted = 0
            for handle in (state.active, state.staging):
                if handle is not None:
                    result = handle.table.delete(where)
                    deleted = max(deleted, int(result.num_deleted_rows))
            if deleted:
                self._note_writes(state, deleted)
            return deleted

    def _note_writes(self, state: _CollectionState, count: int) -> None:
        if state.pending_writes == 0:
            state.first_pending_at = time.monotonic()
        state.pending_writes += count
        if state.pending_writes >= self.options.maintenance_writes:
            self._wake.set()

    @contextmanager
    def locked_active(self, collection: Collection) -> Iterator[TableHandle | None]:
        """The collection's active table (None before its first write) with the collection
        lock held: no write, compaction, prune or reindex swap touches it meanwhile. What a
        backup pins the table's files under; keep the block short, writes wait for it."""
        with self._states[collection].lock:
            yield self._states[collection].active

    # ------------------------------------------------------------------------------ reads

    def list_documents(
        self, collection: Collection, scope: Scope, source_id: str, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to `limit` documents of the active table in id order after `after`, without
        text or vector. Lock-free like searches."""
        handle = self._states[collection].active
        if handle is None:
            return []
        where = scope.sql()
        if source_id:
            where += f" AND source_id = {quote(source_id)}"
        if after is not None:
            where += f" AND id > {quote(after)}"
        rows = self._read_rows(handle.table, where, STORED_COLUMNS).sort_by("id").slice(0, limit)
        listed: list[dict[str, Any]] = rows.to_pylist()
        return listed

    def read_view(self, collection: Collection) -> tuple[ReadView | None, bool]:
        """The table a search reads, and whether a reindex is running (which allows searching
        an old table whose model differs from the configured one, with its own model)."""
        state = self._states[collection]
        # Lock-free: staging is read before active, and the swap sets active before clearing
        # staging, so a search racing the swap never sees the old table without the reindex.
        reindexing = state.staging is not None
        handle = state.active
        if handle is None:
            return None, reindexing
        return ReadView(collection, handle, state.has_vector_index), reindexing

    def mismatch_error(self, view: ReadView) -> FailedPrecondition:
        return self._mismatch(view.handle)

    def vector_search(
        self, view: ReadView, vector: NDArray[np.float32], scope: Scope, limit: int
    ) -> pa.Table:
        """Cosine nearest neighbours within the scope. The filter is applied before ranking
        (prefilter); with an ANN index at least `nprobes` partitions are probed and more when
        a narrow scope has not filled the limit, then candidates are re-ranked exactly."""
        query = (
            view.handle.table.search(vector, vector_column_name=VECTOR_COLUMN, query_type="vector")
            .distance_type("cosine")
            .where(scope.sql(), prefilter=True)
            .select([*RESULT_COLUMNS, "_distance"])
            .limit(limit)
        )
        if view.has_vector_index:
            query = (
                query.minimum_nprobes(self.options.nprobes)
                .maximum_nprobes(0)
                .refine_factor(self.options.refine_factor)
            )
        result: pa.Table = query.to_arrow()
        return result

    def text_search(self, view: ReadView, text: str, scope: Scope, limit: int) -> pa.Table:
        """BM25 full-text match within the scope (filtered before ranking). Rows written since
        the index was refreshed are still searched (LanceDB scans them), only slower."""
        self._refresh_text_index(view)
        query = (
            view.handle.table.search(text, query_type="fts", fts_columns=TEXT_INDEX_COLUMN)
            .where(scope.sql(), prefilter=True)
            .select([*RESULT_COLUMNS, "_score"])
            .limit(limit)
        )
        result: pa.Table = query.to_arrow()
        return result

    def _refresh_text_index(self, view: ReadView) -> None:
        """The full-text index is not updated by writes: before a full-text search of a table
        that changed since the last refresh, fold the new rows in (optimize() updates every
        index incrementally). Skipped when a write holds the lock: the search is still right."""
        state = self._states[view.collection]
        table = view.handle.table
        if table.version == state.text_index_version or state.active is not view.handle:
            return
        if not state.lock.acquire(blocking=False):
            return
        try:
            if state.active is view.handle and table.version != state.text_index_version:
                if self._unindexed_text_rows(table) > 0:
                    self._optimize_locked(state, build_indexes=False)
                state.text_index_version = table.version
        finally:
            state.lock.release()

    @staticmethod
    def _unindexed_text_rows(table: Any) -> int:
        for index in table.list_indices():
            if list(index.columns) == [TEXT_INDEX_COLUMN]:
                stats = table.index_stats(index.name)
                return int(stats.num_unindexed_rows) if stats is not None else 0
        return table.count_rows()  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------ maintenance

    @staticmethod
    def _has_vector_index(table: Any) -> bool:
        return any(list(i.columns) == [VECTOR_COLUMN] for i in table.list_indices())

    def _ensure_indexes(self, handle: TableHandle) -> bool:
        """Creates missing indexes; builds the ANN index once the table is large enough.
        Returns whether the table has a vector index."""
        table = handle.table
        indexed = {tuple(i.columns) for i in table.list_indices()}
        for column in SCALAR_INDEX_COLUMNS:
            if (column,) not in indexed:
                table.create_index(column, config=BTree(), replace=True)
        if (TEXT_INDEX_COLUMN,) not in indexed:
            table.create_index(TEXT_INDEX_COLUMN, config=FTS(), replace=True)
        if (VECTOR_COLUMN,) in indexed:
            return True
        rows = table.count_rows()
        if rows < self.options.index_threshold_rows:
            return False
        partitions = max(1, math.ceil(rows / self.options.index_partition_rows))
        started = time.monotonic()
        table.create_index(
            VECTOR_COLUMN,
            config=IvfSq(distance_type="cosine", num_partitions=partitions),
            replace=True,
        )
        log.info(
            "built IVF_SQ index on %s: %d rows, %d partitions, %.1fs",
            handle.name,
            rows,
            partitions,
            time.monotonic() - started,
        )
        return True

    def _optimize_locked(self, state: _CollectionState, *, build_indexes: bool = True) -> None:
        handle = state.active
        if handle is None:
            return
        if build_indexes:  # not on a search's path: an ANN build takes seconds
            state.has_vector_index = self._ensure_indexes(handle)
        # Compaction (small appends do not pile up fragments), incremental index update
        # (new rows join the vector, scalar and full-text indexes), pruning of old versions.
        handle.table.optimize(cleanup_older_than=PRUNE_OLDER_THAN)
        state.text_index_version = handle.table.version
        state.pending_writes = 0

    def optimize(self, collection: Collection) -> None:
        state = self._states[collection]
        with state.lock:
            self._optimize_locked(state)
            self._drop_retired(state, force=False)

    def _maintenance_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(timeout=min(1.0, self.options.maintenance_seconds))
            self._wake.clear()
            if self._stopping.is_set():
                return
            now = time.monotonic()
            for state in self._states.values():
                due = state.pending_writes >= self.options.maintenance_writes or (
                    state.pending_writes > 0
                    and now - state.first_pending_at >= self.options.maintenance_seconds
                )
                try:
                    if due:
                        with state.lock:
                            self._optimize_locked(state)
                    if state.retired:
                        with state.lock:
                            self._drop_retired(state, force=False)
                except Exception:
                    # Maintenance is retried on the next round; a failure must not kill it.
                    log.exception("maintenance of %s failed", state.collection)

    def _drop_retired(self, state: _CollectionState, *, force: bool) -> None:
        keep: list[tuple[str, float]] = []
        for name, retired_at in state.retired:
            if force or time.monotonic() - retired_at >= RETIRE_AFTER_SECONDS:
                try:
                    self._db.drop_table(name)
                    log.info("dropped replaced table %s", name)
                except Exception:
                    log.exception("could not drop replaced table %s", name)
            else:
                keep.append((name, retired_at))
        state.retired = keep

    # ------------------------------------------------------------------------------ stats

    def stats(self, collection: Collection) -> CollectionStats:
        state = self._states[collection]
        handle = state.active
        progress = state.progress.copy()
        if handle is None:
            return CollectionStats(
                collection=collection,
                table_name="",
                exists=False,
                row_count=0,
                space=None,
                configured=self.configured,
                table_version=0,
                fragment_count=0,
                small_fragment_count=0,
                vector_index_state=VectorIndexState.UNSPECIFIED,
                index_threshold_rows=self.options.index_threshold_rows,
                indexes=[],
                reindex=progress,
            )
        table = handle.table
        rows = int(table.count_rows())
        table_stats = table.stats()
        fragments = table_stats["fragment_stats"]
        indexes: list[IndexSummary] = []
        for index in table.list_indices():
            index_stats = table.index_stats(index.name)
            indexes.append(
                IndexSummary(
                    name=index.name,
                    index_type=index_stats.index_type if index_stats else str(index.index_type),
                    columns=list(index.columns),
                    indexed_rows=int(index_stats.num_indexed_rows) if index_stats else 0,
                    unindexed_rows=int(index_stats.num_unindexed_rows) if index_stats else 0,
                )
            )
        vector = next((i for i in indexes if i.columns == [VECTOR_COLUMN]), None)
        if vector is None:
            below = rows < self.options.index_threshold_rows
            index_state = VectorIndexState.NOT_NEEDED if below else VectorIndexState.PENDING
        else:
            ready = vector.unindexed_rows == 0
            index_state = VectorIndexState.READY if ready else VectorIndexState.PARTIAL
        return CollectionStats(
            collection=collection,
            table_name=handle.name,
            exists=True,
            row_count=rows,
            space=handle.space,
            configured=self.configured,
            table_version=int(table.version),
            fragment_count=int(fragments["num_fragments"]),
            small_fragment_count=int(fragments["num_small_fragments"]),
            vector_index_state=index_state,
            index_threshold_rows=self.options.index_threshold_rows,
            indexes=indexes,
            reindex=progress,
        )

    # ---------------------------------------------------------------------------- reindex

    def reindex(self, collection: Collection, embedder: Embedder) -> ReindexProgress:
        """Starts rebuilding the collection with `embedder` in a new table beside the old one
        and returns at once. Searches keep reading the old table until the swap; upserts meanwhile
        go to the new table (and to the old one too when its model is the same)."""
        space = VectorSpace.of(embedder)
        state = self._states[collection]
        with state.lock:
            if state.staging is not None:
                return state.progress.copy()
            source = state.active
            now = time.time()
            if source is None:
                state.progress = ReindexProgress(
                    state=ReindexState.SUCCEEDED,
                    target_model=space.model,
                    target_dimensions=space.dimensions,
                    start_time=now,
                    end_time=now,
                )
                return state.progress.copy()
            generation = state.generation + 1
            staging = self._create_table(self._physical_name(collection, generation), space)
            ids = self._read_rows(source.table, None, ["id"])
            id_list: list[str] = ids.column("id").to_pylist()
            state.staging = staging
            state.progress = ReindexProgress(
                state=ReindexState.RUNNING,
                source_model=source.space.model,
                source_dimensions=source.space.dimensions,
                target_model=space.model,
                target_dimensions=space.dimensions,
                total_rows=len(id_list),
                start_time=now,
                target_table=staging.name,
            )
            self._write_catalog(state)
            thread = threading.Thread(
                target=self._run_reindex,
                args=(state, source, staging, generation, id_list, embedder),
                name=f"reindex-{collection.value}",
                daemon=True,
            )
            state.reindex_thread = thread
            thread.start()
            log.info(
                "reindexing %s: %d rows from %s (%s) into %s (%s)",
                collection,
                len(id_list),
                source.name,
                source.space.model,
                staging.name,
                space.model,
            )
            return state.progress.copy()

    def _run_reindex(
        self,
        state: _CollectionState,
        source: TableHandle,
        staging: TableHandle,
        generation: int,
        ids: list[str],
        embedder: Embedder,
    ) -> None:
        columns = ["id", "team_id", "site_id", "environment_id", "source_id", "text"]
        last_saved = time.monotonic()
        try:
            for chunk in _chunks(ids, REINDEX_CHUNK):
                if self._stopping.is_set():
                    raise Aborted("the server is shutting down; call Reindex again")
                rows = self._read_rows(source.table, _in_list("id", chunk), columns)
                docs = [Document(**row) for row in rows.to_pylist()]
                texts: dict[str, str] = {}
                for doc in docs:
                    texts.setdefault(doc.sha256, doc.text)
                shas = list(texts)
                by_sha = dict(zip(shas, embed(embedder, [texts[s] for s in shas]), strict=True))
                with state.lock:
                    if state.staging is not staging:
                        raise Aborted("the reindex was superseded")
                    # Rows deleted or rewritten since they were read are left out; rows an
                    # upsert already put into the new table are never overwritten.
                    current = self._read_rows(
                        source.table, _in_list("id", chunk), ["id", "text_sha256"]
                    )
                    still = {(r["id"], r["text_sha256"]) for r in current.to_pylist()}
                    keep = [d for d in docs if (d.id, d.sha256) in still]
                    if keep:
                        vectors = np.stack([by_sha[d.sha256] for d in keep])
                        batch = _rows_table(
                            staging.table.schema,
                            keep,
                            vectors,
                            staging.space.model,
                            datetime.now(UTC),
                        )
                        (
                            staging.table.merge_insert("id")
                            .when_not_matched_insert_all()
                            .execute(batch)
                        )
                    state.progress.done_rows += len(chunk)
                    if time.monotonic() - last_saved >= 2.0:
                        self._write_catalog(state)
                        last_saved = time.monotonic()
            with state.lock:
                if state.staging is not staging:
                    raise Aborted("the reindex was superseded")
                has_vector_index = self._ensure_indexes(staging)
                staging.table.optimize(cleanup_older_than=PRUNE_OLDER_THAN)
                old = state.active
                state.active = staging
                state.staging = None
                state.generation = generation
                state.has_vector_index = has_vector_index
                state.text_index_version = staging.table.version
                state.pending_writes = 0
                state.progress.state = ReindexState.SUCCEEDED
                state.progress.end_time = time.time()
                self._write_catalog(state)
                if old is not None:
                    state.retired.append((old.name, time.monotonic()))
            log.info("reindex of %s done: now %s", state.collection, staging.name)
        except Exception as exc:
            message = exc.message if isinstance(exc, ServiceError) else str(exc)
            if not isinstance(exc, Aborted):
                log.exception("reindex of %s failed", state.collection)
            with state.lock:
                if state.staging is staging:
                    state.staging = None
                    try:
                        self._db.drop_table(staging.name)
                    except Exception:
                        log.exception("could not drop unfinished table %s", staging.name)
                state.progress.state = ReindexState.FAILED
                state.progress.error = message or type(exc).__name__
                state.progress.end_time = time.time()
                try:
                    self._write_catalog(state)
                except Exception:
                    log.exception("could not record the failed reindex of %s", state.collection)

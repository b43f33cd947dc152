"""Which LanceDB table holds each collection, and which vectors it holds.

A collection's tables are generations of one name: generation 1 is the plain name
(`page_embeddings`), a reindex builds `page_embeddings__g2` beside it, and the catalog records
which one is current. Each table records the provider, model and dimensions of its vectors in
its Arrow schema metadata, written when it is created: a write or vector search that would mix
them with the configured model is refused (FAILED_PRECONDITION naming the Reindex RPC), never
guessed at.

Tables also holds every collection's state, the one record the other parts share, with the
collection lock that serializes its writes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import lancedb
import pyarrow as pa

from servicekit.errors import FailedPrecondition
from vector_service.embeddings import Embedder
from vector_service.errors import model_mismatch
from vector_service.store.catalog import Catalog, ReindexProgress, ReindexState
from vector_service.store.indexes import create_missing, has_vector_index
from vector_service.store.rows import VECTOR_COLUMN, row_schema

log = logging.getLogger(__name__)

_META_PROVIDER = b"loom.provider"
_META_MODEL = b"loom.model"
_META_DIMENSIONS = b"loom.dimensions"


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
class TableHandle:
    name: str
    table: Any  # lancedb.table.LanceTable (the package has no type information)
    space: VectorSpace


@dataclass
class CollectionState:
    """A collection's tables and the bookkeeping of its writes, maintenance and reindex. The
    fields change only under `lock`; searches read `active` and `staging` without it."""

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


def table_schema(space: VectorSpace) -> pa.Schema:
    """The schema of a new table for vectors of `space`, which it records in its metadata."""
    return row_schema(space.dimensions).with_metadata(
        {
            _META_PROVIDER: space.provider.encode(),
            _META_MODEL: space.model.encode(),
            _META_DIMENSIONS: str(space.dimensions).encode(),
        }
    )


def space_of(table: Any) -> VectorSpace:
    """The vector space a table records."""
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


def _physical_name(collection: Collection, generation: int) -> str:
    return collection.value if generation <= 1 else f"{collection.value}__g{generation}"


def _generation_of(name: str, collection: Collection) -> int:
    suffix = name.removeprefix(collection.value + "__g")
    return int(suffix) if suffix != name and suffix.isdigit() else 1


def _belongs_to(name: str, collection: Collection) -> bool:
    return name == collection.value or name.startswith(collection.value + "__g")


class Tables:
    """The LanceDB connection, the catalog, and every collection's state, loaded from them
    when opened. Thread-safe."""

    def __init__(
        self, uri: str, configured: VectorSpace, storage: dict[str, str] | None = None
    ) -> None:
        self.uri = uri
        self.configured = configured
        self.db = lancedb.connect(uri, storage_options=storage or None)
        self.catalog = Catalog(self.db)
        self.states = {c: CollectionState(c) for c in Collection}
        self._load()

    def names(self) -> list[str]:
        names: list[str] = []
        token: str | None = None
        while True:
            page = self.db.list_tables(page_token=token)
            names.extend(page.tables)
            token = page.page_token
            if not token:
                return names

    def _load(self) -> None:
        names = set(self.names())
        entries = self.catalog.entries()
        for collection, state in self.states.items():
            entry = entries.get(collection.value)
            active_name = ""
            if entry is not None:
                active_name = entry.active_table
                state.generation = entry.generation
                state.progress = entry.progress
            else:
                # Tables without a catalog row (the catalog is newer, or was lost): adopt the
                # latest generation.
                found = sorted(
                    (_generation_of(name, collection), name)
                    for name in names
                    if _belongs_to(name, collection)
                )
                if found:
                    state.generation, active_name = found[-1]
            if active_name and active_name not in names:
                log.error("catalog names table %s for %s; it is missing", active_name, collection)
                active_name = ""
            if active_name:
                table = self.db.open_table(active_name)
                state.active = TableHandle(active_name, table, space_of(table))
                state.has_vector_index = has_vector_index(table)
                if not state.active.space.same_vectors(self.configured):
                    log.warning("%s", self.mismatch(state.active).message)
            if state.progress.state is ReindexState.RUNNING:
                state.progress.state = ReindexState.FAILED
                state.progress.error = "interrupted by a restart; call Reindex again"
                state.progress.end_time = time.time()
            for name in names:
                if _belongs_to(name, collection) and name != active_name:
                    log.warning("dropping leftover table %s of %s", name, collection)
                    self.db.drop_table(name)
            if entry is not None or state.active is not None:
                self.record(state)

    def record(self, state: CollectionState) -> None:
        """Writes the collection's current table, generation and reindex progress to the
        catalog."""
        self.catalog.write(
            state.collection.value,
            state.active.name if state.active else "",
            state.generation,
            state.progress,
        )

    def create(self, collection: Collection, generation: int, space: VectorSpace) -> TableHandle:
        """A new empty table of that generation of the collection for vectors of `space`
        (replacing any table of its name), with its scalar and full-text indexes."""
        name = _physical_name(collection, generation)
        if name in self.names():
            self.db.drop_table(name)
        table = self.db.create_table(name, schema=table_schema(space))
        create_missing(table)
        log.info("created table %s (%s, %d dimensions)", name, space.model, space.dimensions)
        return TableHandle(name, table, space)

    def mismatch(self, handle: TableHandle) -> FailedPrecondition:
        """The error for using a table whose vectors are not of the configured model."""
        collection = next(c for c in Collection if _belongs_to(handle.name, c))
        return model_mismatch(
            handle.name,
            collection.api_name,
            handle.space.model,
            handle.space.dimensions,
            self.configured.model,
            self.configured.dimensions,
        )

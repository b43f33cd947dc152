"""The tier itself: which team segments are resident, under which memory budget, how they are
loaded from LanceDB, and how every write to the active tables reaches them.

- **Lookup.** A search of a collection in one team asks for the segment of (collection, team);
  it is used only when it mirrors the very table the search reads (the ReadView's handle). A
  miss answers None at once: the caller asks LanceDB, then queues the team's load for the
  loader thread (after, so that a cold scope's first search costs LanceDB's query alone).
- **Loading** (a background thread): under the collection lock a Loading record is registered;
  from then on every write that touches the team is journaled. The team's rows are counted and
  read without the lock, the segment is built, and under the lock again the journal is applied
  (every upsert and delete is idempotent, so replaying writes the read already saw is harmless)
  and the segment installed. A team over `exact_max_rows`, or larger than the whole budget, is
  not loaded; its searches stay with LanceDB (and its ANN index) until OVERSIZE_RETRY_SECONDS
  passed.
- **Budget.** Resident bytes (every segment's nbytes, plus what loads in flight reserved) never
  exceed `max_bytes`: a load reserves its estimate first and an upsert that grows a segment
  evicts others first, least recently searched first.
- **In step.** The store calls the TableObserver methods inside the collection lock after each
  LanceDB write of the active table. Each of our writes makes exactly one table version, so a
  version that moved further means a writer we did not see (another process: docs/vector.md
  says one process writes each table): the collection's segments are dropped and reload. A
  reindex swap drops them too. A hook never raises: a segment that cannot follow a change is
  dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from vector_service.store import Collection, ReadView, Scope, TableHandle, VectorStore
from vector_service.store.filters import quote
from vector_service.store.rows import (
    ID_COLUMN,
    RESULT_COLUMNS,
    SCOPE_COLUMNS,
    VECTOR_COLUMN,
    read_rows,
)
from vector_service.tier.ivf import PARTITION_ROWS
from vector_service.tier.segment import Segment

log = logging.getLogger(__name__)

_TEAM = SCOPE_COLUMNS[0]
# A team found too large (or whose load failed) is not tried again for this long.
OVERSIZE_RETRY_SECONDS = 60.0
# What a row is assumed to cost before its load shows the real figure: the matrix row with
# the spare rows kept for appends, and its columns (ids, scope, a text of a few hundred bytes).
_ROW_COLUMNS_ESTIMATE = 600


@dataclass(frozen=True)
class TierOptions:
    max_bytes: int = 1 << 30
    exact_max_rows: int = 50_000
    partition_rows: int = PARTITION_ROWS


@dataclass(frozen=True)
class TierStats:
    """One collection's part of the tier, and the budget they all share."""

    teams: int
    partitioned_teams: int
    rows: int
    resident_bytes: int
    loading: int
    hits: int
    misses: int
    loads: int
    evictions: int
    invalidations: int
    max_bytes: int
    total_resident_bytes: int
    peak_resident_bytes: int
    exact_max_rows: int


@dataclass
class _Counters:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    evictions: int = 0
    invalidations: int = 0


@dataclass
class _Loading:
    handle: TableHandle
    journal: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    reserved: int = 0


Key = tuple[Collection, str]  # (collection, team_id)


class SearchTier:
    """Thread-safe. Its own lock guards its maps and counters and is only ever taken inside a
    collection lock, never the other way round."""

    def __init__(self, store: VectorStore, options: TierOptions) -> None:
        self._store = store
        self.options = options
        self._lock = threading.Lock()
        self._segments: OrderedDict[Key, tuple[TableHandle, Segment]] = OrderedDict()
        self._loading: dict[Key, _Loading] = {}
        self._skip_until: dict[Key, float] = {}
        self._versions: dict[Collection, tuple[TableHandle, int]] = {}
        self._counters = {c: _Counters() for c in Collection}
        self._resident = 0
        self._peak = 0
        self._queue: queue.SimpleQueue[tuple[Key, _Loading] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def enabled(self) -> bool:
        return self.options.max_bytes > 0 and self.options.exact_max_rows > 0

    # ------------------------------------------------------------------------- searching

    def vector_search(
        self, view: ReadView, vector: NDArray[np.float32], scope: Scope, k: int
    ) -> list[dict[str, Any]] | None:
        """The k nearest rows of the scope from memory, as the store's vector_search rows, or
        None when the team's segment is not resident (then call `missed` once LanceDB
        answered)."""
        if not self.enabled:
            return None
        key = (view.collection, scope.team_id)
        with self._lock:
            found = self._segments.get(key)
            counters = self._counters[view.collection]
            if found is not None and found[0] is view.handle:
                self._segments.move_to_end(key)
                counters.hits += 1
                snapshot = found[1].snapshot
            else:
                counters.misses += 1
                return None
        norm = float(np.linalg.norm(vector))
        query = (vector / norm).astype(np.float32, copy=False)
        return snapshot.search(query, scope, k)

    # ------------------------------------------------------------------------- loading

    def missed(self, view: ReadView, scope: Scope) -> None:
        """Queues the load of the team whose search vector_search could not answer. Called
        after LanceDB answered that search, so that the load does not slow it down (a cold
        team's first search is LanceDB's query alone)."""
        if not self.enabled:
            return
        key = (view.collection, scope.team_id)
        with self._lock:
            if key in self._loading or key in self._segments:
                return
            if self._skip_until.get(key, 0.0) > time.monotonic():
                return
            # Writes to the team are journaled from now on (see _load).
            loading = self._loading[key] = _Loading(view.handle)
            self._queue.put((key, loading))

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="search-tier-loader", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            self._segments.clear()
            self._loading.clear()
            self._resident = 0

    def _run(self) -> None:
        while not self._stopping.is_set():
            item = self._queue.get()
            if item is None:
                return
            key, loading = item
            try:
                self._load(key, loading)
            except Exception:
                log.exception("search tier: loading team %s of %s failed", key[1], key[0])
                with self._lock:
                    self._drop_loading(key, loading)
                    self._skip_until[key] = time.monotonic() + OVERSIZE_RETRY_SECONDS

    def _load(self, key: Key, mine: _Loading) -> None:
        """Loads the team's segment. `mine` was registered (by the search that missed) before
        the rows are read, so every write since is in its journal; it is dropped, and this load
        abandoned, when the collection is invalidated meanwhile."""
        collection, team = key
        handle = mine.handle
        started = time.perf_counter()
        with self._store.locked_active(collection) as active, self._lock:
            if active is not handle or self._loading.get(key) is not mine:
                self._drop_loading(key, mine)
                return
            if collection not in self._versions or self._versions[collection][0] is not handle:
                self._versions[collection] = (handle, int(handle.table.version))
        where = f"{_TEAM} = {quote(team)}"
        rows = int(handle.table.count_rows(where))
        estimate = rows * (handle.space.dimensions * 4 * 9 // 8 + _ROW_COLUMNS_ESTIMATE)
        with self._lock:
            if self._loading.get(key) is not mine:
                return
            if not rows or estimate > self.options.max_bytes:
                # Nothing to hold (a team that never wrote here), or more than the budget.
                self._drop_loading(key, mine)
                self._skip_until[key] = time.monotonic() + OVERSIZE_RETRY_SECONDS
                log.info(
                    "search tier: team %s of %s has %d rows (~%d bytes): searched in LanceDB",
                    team,
                    collection,
                    rows,
                    estimate,
                )
                return
            self._make_room(estimate, keep=None)
            mine.reserved = estimate
            self._add_resident(estimate)
        table = read_rows(handle.table, where, [*RESULT_COLUMNS, VECTOR_COLUMN])
        options = self.options
        segment = Segment(
            team, handle.space.dimensions, table, options.exact_max_rows, options.partition_rows
        )
        with self._store.locked_active(collection) as active, self._lock:
            if self._loading.get(key) is not mine or active is not handle:
                self._drop_loading(key, mine)
                return
            for kind, args in mine.journal:
                if kind == "upsert":
                    segment.upsert(*args)
                else:
                    segment.delete(*args)
            self._drop_loading(key, mine)
            size = segment.nbytes
            if size > self.options.max_bytes:
                self._skip_until[key] = time.monotonic() + OVERSIZE_RETRY_SECONDS
                return
            self._make_room(size, keep=None)
            self._segments[key] = (handle, segment)
            self._add_resident(size)
            self._counters[collection].loads += 1
        log.info(
            "search tier: loaded team %s of %s: %d rows (%s), %.1f MB in %.0f ms",
            team,
            collection,
            segment.row_count,
            f"{segment.partitions} IVF partitions" if segment.partitions else "exact",
            size / 1e6,
            1000 * (time.perf_counter() - started),
        )

    # ------------------------------------------------------------- accounting (self._lock held)

    def _add_resident(self, delta: int) -> None:
        self._resident += delta
        self._peak = max(self._peak, self._resident)

    def _drop_loading(self, key: Key, loading: _Loading) -> None:
        if self._loading.get(key) is loading:
            del self._loading[key]
            self._resident -= loading.reserved
            loading.reserved = 0

    def _evict(self, key: Key, *, counted: bool) -> None:
        handle_segment = self._segments.pop(key, None)
        if handle_segment is not None:
            self._resident -= handle_segment[1].nbytes
            if counted:
                self._counters[key[0]].evictions += 1

    def _make_room(self, needed: int, keep: Key | None) -> None:
        """Evicts least recently searched segments (never `keep`) until `needed` more bytes fit."""
        for key in list(self._segments):
            if self._resident + needed <= self.options.max_bytes:
                return
            if key != keep:
                self._evict(key, counted=True)
                log.info("search tier: evicted team %s of %s", key[1], key[0])

    def _invalidate(self, collection: Collection, why: str) -> None:
        keys = [k for k in self._segments if k[0] == collection]
        for key in keys:
            self._evict(key, counted=False)
        for key, loading in [(k, v) for k, v in self._loading.items() if k[0] == collection]:
            self._drop_loading(key, loading)
        self._versions.pop(collection, None)
        if keys:
            self._counters[collection].invalidations += 1
            log.info("search tier: dropped %d teams of %s: %s", len(keys), collection, why)

    def _in_step(
        self, collection: Collection, handle: TableHandle, before: int, after: int
    ) -> bool:
        """Records that the table is at `after`; drops the collection's segments when the table
        was not at `before` before the change (`before` < 0: one version ago, which is what one
        write of ours makes)."""
        known = self._versions.get(collection)
        expected = after - 1 if before < 0 else before
        if known is not None and (known[0] is not handle or known[1] != expected):
            self._invalidate(collection, f"table moved from version {known[1]} to {after} unseen")
            self._versions[collection] = (handle, after)
            return False
        self._versions[collection] = (handle, after)
        return True

    def _targets(
        self, collection: Collection, handle: TableHandle
    ) -> list[tuple[Key, Segment | _Loading]]:
        out: list[tuple[Key, Segment | _Loading]] = []
        for key, (owner, segment) in self._segments.items():
            if key[0] == collection and owner is handle:
                out.append((key, segment))
        for key, loading in self._loading.items():
            if key[0] == collection and loading.handle is handle:
                out.append((key, loading))
        return out

    def _resize(self, key: Key, segment: Segment, before: int) -> None:
        after = segment.nbytes
        self._resident += after - before
        if after > self.options.max_bytes:
            self._evict(key, counted=True)
            self._skip_until[key] = time.monotonic() + OVERSIZE_RETRY_SECONDS
            return
        self._make_room(0, keep=key)
        self._peak = max(self._peak, self._resident)

    # ------------------------------------------------ TableObserver (collection lock held)

    def upserted(
        self, collection: Collection, handle: TableHandle, rows: pa.Table, version: int
    ) -> None:
        with self._lock:
            try:
                if not self._in_step(collection, handle, -1, version):
                    return
                teams: list[str] = rows.column(_TEAM).to_pylist()
                by_team: dict[str, list[int]] = {}
                for position, team in enumerate(teams):
                    by_team.setdefault(team, []).append(position)
                for team in by_team:
                    # A team found empty (or too large) is worth another look once it wrote.
                    self._skip_until.pop((collection, team), None)
                targets = self._targets(collection, handle)
                if not targets:
                    return
                ids: list[str] = rows.column(ID_COLUMN).to_pylist()
                team_of = dict(zip(ids, teams, strict=True))
                for key, target in targets:
                    mine = by_team.get(key[1], [])
                    own = rows.take(pa.array(mine, pa.int64())) if mine else rows.slice(0, 0)
                    # Ids now of another team leave this one (a loading team may hold any).
                    held = team_of.keys() if isinstance(target, _Loading) else target.held(team_of)
                    gone = [i for i in held if team_of[i] != key[1]]
                    if isinstance(target, _Loading):
                        target.journal.append(("upsert", (own, gone)))
                        continue
                    before = target.nbytes
                    target.upsert(own, gone)
                    self._resize(key, target, before)
            except Exception:
                log.exception("search tier: could not follow an upsert of %s", collection)
                self._invalidate(collection, "an upsert could not be followed")

    def deleted(
        self,
        collection: Collection,
        handle: TableHandle,
        scope: Scope,
        ids: Sequence[str],
        source_id: str,
        version: int,
    ) -> None:
        with self._lock:
            try:
                if not self._in_step(collection, handle, -1, version):
                    return
                for key, target in self._targets(collection, handle):
                    if key[1] != scope.team_id:
                        continue
                    if isinstance(target, _Loading):
                        target.journal.append(("delete", (scope, list(ids), source_id)))
                        continue
                    before = target.nbytes
                    target.delete(scope, ids, source_id)
                    self._resize(key, target, before)
            except Exception:
                log.exception("search tier: could not follow a delete in %s", collection)
                self._invalidate(collection, "a delete could not be followed")

    def maintained(
        self, collection: Collection, handle: TableHandle, before: int, after: int
    ) -> None:
        with self._lock:
            self._in_step(collection, handle, before, after)

    def replaced(self, collection: Collection) -> None:
        with self._lock:
            self._invalidate(collection, "a reindex replaced the table")

    # ------------------------------------------------------------------------- stats

    def stats(self, collection: Collection) -> TierStats:
        with self._lock:
            mine = [seg for key, (_, seg) in self._segments.items() if key[0] == collection]
            counters = self._counters[collection]
            return TierStats(
                teams=len(mine),
                partitioned_teams=sum(1 for seg in mine if seg.partitions),
                rows=sum(seg.row_count for seg in mine),
                resident_bytes=sum(seg.nbytes for seg in mine),
                loading=sum(1 for key in self._loading if key[0] == collection),
                hits=counters.hits,
                misses=counters.misses,
                loads=counters.loads,
                evictions=counters.evictions,
                invalidations=counters.invalidations,
                max_bytes=self.options.max_bytes,
                total_resident_bytes=self._resident,
                peak_resident_bytes=self._peak,
                exact_max_rows=self.options.exact_max_rows,
            )

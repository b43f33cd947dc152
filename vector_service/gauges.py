"""vector_service's per-collection gauges, computed when Prometheus scrapes
(servicekit.metrics): rows, table version, fragments (what compaction works down) and the
vector index's state, from the same numbers GetCollectionStats reports. Reading them opens no
lock and writes nothing."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from servicekit.metrics import GaugeCollector, gauge
from vector_service.store import Collection, VectorIndexState, VectorStore
from vector_service.store.rows import VECTOR_COLUMN


def collection_label(collection: Collection) -> str:
    """pages, sections, images, posts."""
    return collection.name.lower()


class VectorGauges(GaugeCollector):
    name = "collections"

    def __init__(self, store: VectorStore) -> None:
        super().__init__()
        self._store = store

    def gauges(self) -> Iterable[Metric]:
        labels = ["collection"]
        rows = gauge("loom_vector_rows", "Documents stored per collection.", labels)
        version = gauge(
            "loom_vector_table_version",
            "The collection table's version: every write makes one; maintenance prunes old ones.",
            labels,
        )
        fragments = gauge(
            "loom_vector_fragments",
            "Data fragments of the collection table; compaction merges small ones.",
            labels,
        )
        small = gauge(
            "loom_vector_small_fragments",
            "Fragments small enough for compaction to merge: they pile up when maintenance "
            "falls behind the writes.",
            labels,
        )
        unindexed = gauge(
            "loom_vector_unindexed_rows",
            "Rows the ANN vector index does not cover yet (searched exactly, slower); 0 "
            "without an index.",
            labels,
        )
        state = gauge(
            "loom_vector_index_state",
            "1 for the vector index state of each collection (not_needed, pending, partial, "
            "ready; unspecified before the first write).",
            [*labels, "state"],
        )
        for collection in Collection:
            found = self._store.stats(collection)
            label = collection_label(collection)
            rows.add_metric([label], found.row_count)
            version.add_metric([label], found.table_version)
            fragments.add_metric([label], found.fragment_count)
            small.add_metric([label], found.small_fragment_count)
            vector = [i for i in found.indexes if i.columns == [VECTOR_COLUMN]]
            unindexed.add_metric([label], vector[0].unindexed_rows if vector else 0)
            for each in VectorIndexState:
                state.add_metric([label, each.value], int(each is found.vector_index_state))
        return [rows, version, fragments, small, unindexed, state]

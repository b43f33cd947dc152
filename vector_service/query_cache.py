"""Query vectors of recent query texts, so a repeated Search with query_text costs no model
call (the local model takes 6.5-7 ms a query here, an API a network round trip).

Keyed by provider, model, dimensions and the exact text: a vector is a function of those alone,
so an entry never goes stale, and during a reindex the old table's model has entries of its
own. Least recently used entries go first once `entries` are held (VECTOR_QUERY_CACHE_ENTRIES;
0 turns the cache off). Two concurrent misses of one text may both embed it; both get the same
vector.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
from numpy.typing import NDArray

from vector_service.embeddings import Embedder
from vector_service.errors import embed

_Key = tuple[str, str, int, str]


class QueryCache:
    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._vectors: OrderedDict[_Key, NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def vector(self, embedder: Embedder, text: str) -> NDArray[np.float32]:
        """The query vector of `text` by `embedder`, embedded only when not held."""
        key = (embedder.name, embedder.model, embedder.dimensions, text)
        with self._lock:
            found = self._vectors.get(key)
            if found is not None:
                self._vectors.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        vector: NDArray[np.float32] = embed(embedder, [text])[0]
        vector.setflags(write=False)  # shared by every later search of the text
        if self.entries > 0:
            with self._lock:
                self._vectors[key] = vector
                self._vectors.move_to_end(key)
                while len(self._vectors) > self.entries:
                    self._vectors.popitem(last=False)
        return vector

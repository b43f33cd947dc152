"""The search tier: each team's vectors of a collection held in memory as one float32 matrix,
so that a Search within a team of up to `VECTOR_TIER_EXACT_MAX_ROWS` rows is one exact
matrix-vector product (recall 1.0) instead of a LanceDB query. LanceDB stays the store of
record: the tier is loaded from it lazily, kept in step with every write this process makes
to it, evicted least recently used under a memory budget, and never needed for a correct
answer (a miss, a large team, or a disabled tier is answered by LanceDB as before).

- `segment`: one team's rows (matrix, columns, live slots) and the exact search over them.
- `resident`: the SearchTier: lookups, the budget and LRU, the loader thread, the store hooks
  that keep segments in step, statistics.
- `blas`: one BLAS thread for the process (measured: numpy's default threads made the products
  several times slower under concurrent calls).

Why this design, and what it was measured against, is in docs/vector.md ("The search tier").
"""

from __future__ import annotations

from vector_service.tier.blas import one_blas_thread
from vector_service.tier.resident import SearchTier, TierOptions, TierStats

__all__ = ["SearchTier", "TierOptions", "TierStats", "one_blas_thread"]

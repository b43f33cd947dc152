"""The partitioning of a team too large to search exactly at the floor (over
VECTOR_TIER_EXACT_MAX_ROWS rows): an inverted file over its unit vectors, in memory.

Spherical k-means (cosine: centroids are unit vectors, rows go to the nearest) trained on a
sample, about VECTOR_TIER_PARTITION_ROWS rows per partition; the segment stores its rows ordered by
partition, so that probing a partition is one product over a contiguous block of the matrix
(no gather). A search probes the PROBE_SHARE of partitions nearest the query (at least
MIN_PROBES), and more when filters leave fewer rows than asked for. Rows written since the
partitioning are a tail that every search scans; the segment re-partitions when the tail grows
past a quarter of it. Measured on the benchmark's 1 x 100k layout (make bench): see
docs/vector.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

PARTITION_ROWS = 1024  # the default of VECTOR_TIER_PARTITION_ROWS
PROBE_SHARE = 0.125
MIN_PROBES = 8
# k-means learns from this many rows per partition (a sample: the partitioning of 100 000 rows
# took ~0.7 s here, most of it the final assignment of every row).
_SAMPLE_ROWS_PER_PARTITION = 160
_ITERATIONS = 6
_CHUNK_ROWS = 16_384
_SEED = 20240611


@dataclass(frozen=True)
class Ivf:
    """Partition p holds slots [bounds[p], bounds[p + 1]); slots from `indexed` on are the
    unpartitioned tail."""

    centroids: NDArray[np.float32]  # (partitions, dimensions), unit length
    bounds: NDArray[np.int64]  # (partitions + 1,)

    @property
    def indexed(self) -> int:
        return int(self.bounds[-1])

    @property
    def partitions(self) -> int:
        return len(self.centroids)

    def probes(self) -> int:
        return min(self.partitions, max(MIN_PROBES, math.ceil(self.partitions * PROBE_SHARE)))


def _nearest(vectors: NDArray[np.float32], centroids: NDArray[np.float32]) -> NDArray[np.intp]:
    out = np.empty(len(vectors), dtype=np.intp)
    for start in range(0, len(vectors), _CHUNK_ROWS):
        block = vectors[start : start + _CHUNK_ROWS] @ centroids.T
        out[start : start + _CHUNK_ROWS] = np.argmax(block, axis=1)
    return out


def _unit(rows: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: NDArray[np.float32] = (rows / norms).astype(np.float32, copy=False)
    return out


def partition(
    vectors: NDArray[np.float32], partition_rows: int = PARTITION_ROWS
) -> tuple[Ivf, NDArray[np.intp]]:
    """Trains the partitions of `vectors` (unit rows), about `partition_rows` rows each, and
    returns them with the order that sorts the rows by partition (rows[order] is what the
    segment stores)."""
    count = len(vectors)
    partitions = max(1, math.ceil(count / partition_rows))
    rng = np.random.default_rng(_SEED)
    sample_rows = min(count, max(_SAMPLE_ROWS_PER_PARTITION * partitions, partitions))
    sample = vectors[rng.choice(count, sample_rows, replace=False)]
    centroids = sample[rng.choice(len(sample), partitions, replace=False)].copy()
    for _ in range(_ITERATIONS):
        nearest = _nearest(sample, centroids)
        order = np.argsort(nearest, kind="stable")
        counts = np.bincount(nearest, minlength=partitions)
        filled = counts > 0
        starts = (np.cumsum(counts) - counts)[filled]
        # Sums of each filled partition's rows (an empty one keeps its centroid).
        centroids[filled] = _unit(np.add.reduceat(sample[order], starts, axis=0))
    nearest = _nearest(vectors, centroids)
    order = np.argsort(nearest, kind="stable")
    bounds = np.searchsorted(nearest[order], np.arange(partitions + 1)).astype(np.int64)
    return Ivf(centroids, bounds), order

"""Hashed word n-grams: deterministic, instant vectors for tests that do not need meaning.

Each lower-cased word and each pair of adjacent words adds +-1 (pairs +-0.5) to one of
`dimensions` buckets chosen by an unkeyed BLAKE2b hash, so the same text gives the same vector
in every process and on every machine (Python's own hash() is salted per process), and texts
that share words have a higher cosine than unrelated texts.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

from vector_service.embeddings.base import (
    EmbedderConfig,
    EmbeddingError,
    validate_texts,
    validate_vectors,
)

__all__ = ["DEFAULT_DIMENSIONS", "MODEL_ID", "HashEmbedder"]

# Part of the vectors' identity: bump it whenever the features or hashing change, so tables
# filled by an older version are not searched with incompatible vectors.
MODEL_ID = "loom-hash-ngram-v1"
DEFAULT_DIMENSIONS = 384
_WORD = re.compile(r"\w+")
_BIGRAM_WEIGHT = 0.5
# A text with no words still needs a unit vector: cosine with a zero vector is undefined.
_NO_WORDS = "\x00no-words"


@functools.lru_cache(maxsize=65536)
def _slot(feature: str, dimensions: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    # Bucket from the low bits, sign from the top bit, so the two are independent.
    return value % dimensions, (1.0 if value >> 63 else -1.0)


class HashEmbedder:
    """The "hash" provider: not semantic, but stable, fast and dependency-free."""

    def __init__(self, config: EmbedderConfig) -> None:
        if config.model and config.model != MODEL_ID:
            raise EmbeddingError(
                f"the hash provider only implements {MODEL_ID}, not {config.model!r}"
            )
        if config.dimensions < 0:
            raise EmbeddingError(f"dimensions must not be negative, got {config.dimensions}")
        self.name = "hash"
        self.model = MODEL_ID
        self.dimensions = config.dimensions or DEFAULT_DIMENSIONS

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        items = validate_texts(texts)
        out = np.zeros((len(items), self.dimensions), dtype=np.float64)
        for row, text in enumerate(items):
            words = _WORD.findall(text.casefold())
            features = [(word, 1.0) for word in words]
            features += [(f"{a} {b}", _BIGRAM_WEIGHT) for a, b in pairwise(words)]
            for feature, weight in features or [(_NO_WORDS, 1.0)]:
                bucket, sign = _slot(feature, self.dimensions)
                out[row, bucket] += sign * weight
            if not out[row].any():
                # Colliding features cancelled out; fall back to the whole text's own bucket.
                bucket, sign = _slot(f"\x00text {text}", self.dimensions)
                out[row, bucket] = sign
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return validate_vectors(out.astype(np.float32), len(items), self.dimensions, self.name)

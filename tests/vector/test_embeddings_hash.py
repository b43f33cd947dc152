"""The "hash" provider, and the registry that picks providers by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vector_service.embeddings import (
    Embedder,
    EmbedderConfig,
    EmbeddingError,
    available_providers,
    create_embedder,
)
from vector_service.embeddings.hashing import MODEL_ID


def hash_embedder(dimensions: int = 0) -> Embedder:
    return create_embedder(EmbedderConfig(provider="hash", dimensions=dimensions))


def test_identical_texts_give_identical_unit_vectors() -> None:
    embedder = hash_embedder()
    vectors = embedder.embed(["Fresh bread every morning", "Fresh bread every morning"])

    assert (embedder.name, embedder.model, embedder.dimensions) == ("hash", MODEL_ID, 384)
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, 384)
    np.testing.assert_array_equal(vectors[0], vectors[1])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_texts_sharing_words_are_closer_than_unrelated_texts() -> None:
    base, related, unrelated = hash_embedder().embed(
        [
            "fresh sourdough bread baked every morning",
            "we bake fresh sourdough bread daily",
            "quarterly tax filing deadline for contractors",
        ]
    )

    assert float(base @ related) > float(base @ unrelated) + 0.2


def test_case_and_punctuation_do_not_matter() -> None:
    first, second = hash_embedder().embed(["Hello, World!", "hello world"])

    np.testing.assert_array_equal(first, second)


def test_configured_dimensions_are_used() -> None:
    embedder = hash_embedder(dimensions=64)

    assert embedder.dimensions == 64
    assert embedder.embed(["a b c"]).shape == (1, 64)


def test_texts_without_words_still_get_unit_vectors() -> None:
    vectors = hash_embedder().embed(["", "!!! ...", "🙂"])

    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_vectors_are_the_same_in_another_process() -> None:
    # Vectors are stored, so a restarted server (with another hash seed) must reproduce them.
    texts = ["Opening hours: 9 to 5", "Über uns"]
    script = (
        "import json, sys\n"
        "from vector_service.embeddings import EmbedderConfig, create_embedder\n"
        "texts = json.loads(sys.argv[1])\n"
        "vectors = create_embedder(EmbedderConfig(provider='hash')).embed(texts)\n"
        "print(json.dumps(vectors.tolist()))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(texts)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )

    other = np.array(json.loads(done.stdout), dtype=np.float32)
    np.testing.assert_array_equal(other, hash_embedder().embed(texts))


def test_unknown_provider_is_refused_with_the_known_names() -> None:
    with pytest.raises(EmbeddingError, match="local") as raised:
        create_embedder(EmbedderConfig(provider="cohere"))

    assert "cohere" in str(raised.value)
    assert {"hash", "local", "openai"} <= set(available_providers())


def test_choosing_a_provider_does_not_import_the_others() -> None:
    # Startup of a service that embeds with one provider must not pay for the others.
    script = (
        "import sys\n"
        "from vector_service.embeddings import EmbedderConfig, create_embedder\n"
        "create_embedder(EmbedderConfig(provider='hash')).embed(['x'])\n"
        "print(sorted(m for m in ('openai', 'tokenizers', 'safetensors') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )

    assert done.stdout.strip() == "[]"


def test_other_hash_model_ids_are_refused() -> None:
    with pytest.raises(EmbeddingError):
        create_embedder(EmbedderConfig(provider="hash", model="loom-hash-ngram-v2"))

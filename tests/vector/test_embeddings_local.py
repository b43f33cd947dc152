"""The default provider: all-MiniLM-L6-v2 in numpy, checked against sentence-transformers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from vector_service.embeddings import (
    EmbedderConfig,
    EmbeddingError,
    create_embedder,
)
from vector_service.embeddings.local import DIMENSIONS, MODEL_ID, LocalEmbedder

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"

PRICING_PAGE = (
    "Pricing. The Starter plan is $19 per month and the Pro plan is $49 per month, billed "
    "annually. Every plan includes hosting, SSL and a free custom domain. Cancel anytime."
)
ABOUT_PAGE = (
    "About us. We are a small team of designers and engineers who met in Lisbon in 2019. "
    "Our mission is to help local bakeries, florists and studios tell their story online."
)


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    local = LocalEmbedder(EmbedderConfig())
    local.load()
    return local


def test_matches_sentence_transformers(embedder: LocalEmbedder) -> None:
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    assert reference["model"] == MODEL_ID
    texts = [item["text"] for item in reference["items"]]
    expected = np.array([item["vector"] for item in reference["items"]], dtype=np.float64)

    vectors = embedder.embed(texts)

    for text, ours, theirs in zip(texts, vectors, expected, strict=True):
        cosine = float(ours @ theirs) / float(np.linalg.norm(ours) * np.linalg.norm(theirs))
        assert cosine > 0.999, f"{text[:40]!r}: cosine {cosine}"


def test_vectors_are_float32_unit_length(embedder: LocalEmbedder) -> None:
    vectors = embedder.embed(["Hello world", "", "Ünïcödé and emoji 🚀"])

    assert vectors.dtype == np.float32
    assert vectors.shape == (3, DIMENSIONS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_price_question_ranks_pricing_page_above_about_page(embedder: LocalEmbedder) -> None:
    query, pricing, about = embedder.embed(["how much does it cost", PRICING_PAGE, ABOUT_PAGE])

    assert float(query @ pricing) > float(query @ about) + 0.1


def test_vector_of_a_text_does_not_depend_on_its_batch(embedder: LocalEmbedder) -> None:
    # Batched, shorter texts are padded and the batch is reordered by length; neither may show.
    texts = [
        " ".join(["Our bakery opens at seven every morning."] * 3),
        "Book a table for two on Friday evening.",
        " ".join(["Our bakery opens at seven every morning."] * 9),
        "Hi",
        "Ok thanks",
    ]
    alone = np.vstack([embedder.embed([text]) for text in texts])

    together = LocalEmbedder(EmbedderConfig(batch_size=2)).embed(texts)

    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_text_past_256_word_pieces_is_ignored(embedder: LocalEmbedder) -> None:
    # Like sentence-transformers with max_seq_length 256: only the start of a long page counts.
    head = " ".join(["The florist delivers fresh bouquets across the city."] * 40)
    with_other_tail = head + " Completely different closing words about rockets and volcanoes."

    first, second = embedder.embed([head, with_other_tail])

    np.testing.assert_allclose(first, second, atol=1e-6)


def test_concurrent_callers_get_the_same_vectors(embedder: LocalEmbedder) -> None:
    texts = [f"Opening hours for shop number {i}" for i in range(12)]
    expected = embedder.embed(texts)
    results: dict[int, np.ndarray] = {}

    def work(worker: int) -> None:
        results[worker] = embedder.embed(texts)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [0, 1, 2, 3]
    for vectors in results.values():
        np.testing.assert_allclose(vectors, expected, atol=1e-6)


def test_default_config_gives_local_minilm() -> None:
    embedder = create_embedder(EmbedderConfig())

    assert (embedder.name, embedder.model, embedder.dimensions) == ("local", MODEL_ID, 384)
    assert embedder.embed([]).shape == (0, 384)


def test_a_single_string_is_refused_rather_than_split_into_characters() -> None:
    with pytest.raises(TypeError):
        create_embedder(EmbedderConfig()).embed("how much does it cost")


@pytest.mark.parametrize(
    "config",
    [
        EmbedderConfig(model="sentence-transformers/all-mpnet-base-v2"),
        EmbedderConfig(dimensions=768),
        EmbedderConfig(batch_size=0),
    ],
)
def test_configuration_the_model_cannot_honour_is_refused(config: EmbedderConfig) -> None:
    with pytest.raises(EmbeddingError):
        create_embedder(config)


def test_missing_model_files_fail_loudly(tmp_path: Path) -> None:
    embedder = LocalEmbedder(EmbedderConfig(), model_dir=tmp_path)

    with pytest.raises(EmbeddingError, match=r"config\.json"):
        embedder.embed(["anything"])

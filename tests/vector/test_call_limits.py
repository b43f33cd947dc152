"""Work per call is bounded (vector_service.api): texts per call, characters per text and per
call give INVALID_ARGUMENT at once, and a call at every limit at once finishes well within
the 10 s deadline documented for EmbedTexts, with the real local model on this machine."""

from __future__ import annotations

import random
import time
from pathlib import Path

import grpc
from loom.vector.v1 import vector_pb2

from content_service.indexing.documents import Scope, VectorDocument
from content_service.indexing.vector_client import UPSERT_BATCH, UPSERT_CHARS, upsert_batches
from tests.support import (
    SERVICE_TOKEN,
    CountingEmbedder,
    VectorServer,
    raises_status,
    serving_vector,
    vector_settings,
)
from tests.vector.conftest import doc
from vector_service import api
from vector_service.embeddings import EmbedderConfig, create_embedder

WORDS = [
    "plans",
    "prices",
    "teams",
    "pages",
    "studio",
    "bakery",
    "florist",
    "story",
    "online",
    "grow",
    "build",
]


def _prose(chars: int, rng: random.Random) -> str:
    out = ""
    while len(out) < chars:
        out += rng.choice(WORDS) + " "
    return out[:chars]


def test_over_the_limits_is_refused_at_once(vector_server: VectorServer) -> None:
    stub = vector_server.stub()
    cases = {
        "too many texts": (["a"] * (api.MAX_EMBED_TEXTS + 1), "texts"),
        "one text too long": (["a" * (api.MAX_EMBED_TEXT_CHARS + 1)], "texts[0]"),
        "too many characters in all": (
            ["a" * 6_000] * (api.MAX_EMBED_CHARS // 6_000 + 1),
            "texts",
        ),
        # The call: 256 texts of 30,000 characters, which ran past a 10 s deadline.
        "256 texts of 30,000 characters": (["x" * 30_000] * 256, "texts"),
    }
    for what, (texts, field) in cases.items():
        start = time.monotonic()
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
            stub.EmbedTexts(vector_pb2.EmbedTextsRequest(texts=texts), timeout=10)
        assert field in err["fields"], what
        assert time.monotonic() - start < 2, what
    assert vector_server.embedder.calls == 0  # the model never ran

    too_much = [doc(f"d{i}", "y" * 30_000) for i in range(api.MAX_UPSERT_CHARS // 30_000 + 1)]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        stub.UpsertDocuments(
            vector_pb2.UpsertDocumentsRequest(
                collection=vector_pb2.COLLECTION_PAGES, documents=too_much
            )
        )
    assert err["fields"] == ["documents"]
    assert vector_server.embedder.calls == 0


def test_a_call_at_the_limits_finishes_well_within_its_deadline(tmp_path: Path) -> None:
    """The costliest EmbedTexts the limits allow with the local model: texts just long enough
    that the model reads all it reads of each (256 tokens), as many as the characters allow."""
    local = create_embedder(EmbedderConfig(provider="local"))
    local.load()  # type: ignore[attr-defined]
    rng = random.Random(7)
    per_text = 1_230
    texts = [_prose(per_text, rng) for _ in range(api.MAX_EMBED_CHARS // per_text)]
    assert sum(map(len, texts)) <= api.MAX_EMBED_CHARS
    settings = vector_settings(tmp_path, embedder="local")
    with serving_vector(settings, CountingEmbedder(local)) as server:
        stub = server.stub(SERVICE_TOKEN)
        start = time.monotonic()
        answer = stub.EmbedTexts(vector_pb2.EmbedTextsRequest(texts=texts), timeout=10)
        took = time.monotonic() - start
    assert len(answer.embeddings) == len(texts)
    assert took < 6, f"{took:.1f} s for a call at the limits"


def test_content_service_splits_its_upserts_to_the_limits() -> None:
    scope = Scope("t", "s", "e")
    docs = [
        VectorDocument("pages", f"p{i}", f"p{i}", scope, "z" * size)
        for i, size in enumerate([40_000, 30_000, 100_000, 10] + [10] * 300)
    ]
    batches = upsert_batches(docs)
    assert [len(b) for b in batches][:3] == [1, 1, 1]
    for batch in batches:
        assert len(batch) <= UPSERT_BATCH
        assert len(batch) == 1 or sum(len(d.text) for d in batch) <= UPSERT_CHARS
    assert sum(len(b) for b in batches) == len(docs)
    assert UPSERT_CHARS == api.MAX_UPSERT_CHARS

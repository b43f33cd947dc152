"""With the local MiniLM model, search finds meaning, not words."""

from __future__ import annotations

from pathlib import Path

from loom.vector.v1 import vector_pb2

from tests.support import CountingEmbedder, serving_vector, vector_settings
from tests.vector.conftest import doc, ids, search, upsert
from vector_service.embeddings import EmbedderConfig, create_embedder

PAGES = {
    "pricing": "Pricing. Starter is $9 per month, Pro is $29 per month; save 20% when billed "
    "yearly. Every plan includes hosting and a custom domain.",
    "about": "About us. We are a small team of designers and engineers in Lisbon, building "
    "tools for independent shops since 2019.",
    "contact": "Contact. Write to hello@example.com or visit our studio on Rua Augusta.",
    "blog": "Ten tips for photographing your products in natural light.",
}


def test_how_much_does_it_cost_finds_the_pricing_page(tmp_path: Path) -> None:
    local = CountingEmbedder(create_embedder(EmbedderConfig(provider="local")))
    with serving_vector(vector_settings(tmp_path, embedder="local"), local) as server:
        stub = server.service
        answer = upsert(stub, [doc(page, text) for page, text in PAGES.items()])
        assert answer.model == "sentence-transformers/all-MiniLM-L6-v2"
        assert answer.dimensions == 384
        for mode in (vector_pb2.SEARCH_MODE_VECTOR, vector_pb2.SEARCH_MODE_HYBRID):
            found = ids(search(stub, "how much does it cost", mode=mode))
            assert found[0] == "pricing", (mode, found)
            assert found.index("pricing") < found.index("about")
        assert (
            ids(search(stub, "who is behind this company", mode=vector_pb2.SEARCH_MODE_VECTOR))[0]
            == "about"
        )

"""Repeated query texts are embedded once (vector_service.query_cache): a real server whose
real hash embedder is wrapped to count its calls."""

from __future__ import annotations

from pathlib import Path

from loom.vector.v1 import vector_pb2

from tests.support import hash_embedder, serving_vector, vector_settings
from tests.vector.conftest import doc, ids, search, upsert


def test_a_repeated_query_text_makes_no_second_model_call(tmp_path: Path) -> None:
    with serving_vector(vector_settings(tmp_path), hash_embedder()) as server:
        stub = server.service
        upsert(stub, [doc("pricing", "pricing plans"), doc("about", "about us")])
        before = server.embedder.calls
        first = search(stub, "how much are the pricing plans")  # HYBRID: one vector list
        assert server.embedder.calls == before + 1
        for mode in (vector_pb2.SEARCH_MODE_HYBRID, vector_pb2.SEARCH_MODE_VECTOR):
            again = search(stub, "how much are the pricing plans", mode=mode)
            assert ids(again)[0] == ids(first)[0] == "pricing"
        # Two collections of one model share the query's vector, within a call and across.
        search(
            stub,
            "how much are the pricing plans",
            collections=(vector_pb2.COLLECTION_PAGES, vector_pb2.COLLECTION_SECTIONS),
        )
        assert server.embedder.calls == before + 1
        search(stub, "who are you")  # another text: embedded
        assert server.embedder.calls == before + 2
        # The cache is keyed by the text exactly.
        search(stub, "Who are you")
        assert server.embedder.calls == before + 3
        # EmbedTexts is not a search: it always calls the model.
        stub.EmbedTexts(vector_pb2.EmbedTextsRequest(texts=["who are you"]))
        assert server.embedder.calls == before + 4


def test_the_cache_is_bounded_and_can_be_off(tmp_path: Path) -> None:
    settings = vector_settings(tmp_path, query_cache_entries=2)
    with serving_vector(settings, hash_embedder()) as server:
        stub = server.service
        upsert(stub, [doc("a", "alpha"), doc("b", "beta")])
        before = server.embedder.calls
        for text in ("one", "two", "one", "three", "one", "two"):
            search(stub, text, mode=vector_pb2.SEARCH_MODE_VECTOR)
        # one, two (held: one two), one (hit), three (evicts two), one (hit), two (embedded)
        assert server.embedder.calls == before + 4
    off = vector_settings(tmp_path / "off", query_cache_entries=0)
    with serving_vector(off, hash_embedder()) as server:
        stub = server.service
        upsert(stub, [doc("a", "alpha")])
        before = server.embedder.calls
        for _ in range(3):
            search(stub, "alpha", mode=vector_pb2.SEARCH_MODE_VECTOR)
        assert server.embedder.calls == before + 3

"""A text already embedded under another id reuses its vector: no model call."""

from __future__ import annotations

from loom.vector.v1 import vector_pb2

from tests.support import VectorServer
from tests.vector.conftest import doc

PAGES = vector_pb2.COLLECTION_PAGES


def test_known_text_under_a_new_id_costs_no_model_call(vector_server: VectorServer) -> None:
    service = vector_server.service
    first = service.UpsertDocuments(
        vector_pb2.UpsertDocumentsRequest(
            collection=PAGES, documents=[doc("dev-1", "Pricing plans for teams", env="dev")]
        )
    )
    assert first.embedded_count == 1
    texts = vector_server.embedder.texts

    # The same text in a cloned environment (another id, another scope), and a new text.
    second = service.UpsertDocuments(
        vector_pb2.UpsertDocumentsRequest(
            collection=PAGES,
            documents=[
                doc("staging-1", "Pricing plans for teams", env="staging"),
                doc("staging-2", "About us", env="staging"),
            ],
        )
    )
    assert (second.created_count, second.embedded_count) == (2, 1)
    assert vector_server.embedder.texts == texts + 1

    found = service.Search(
        vector_pb2.SearchRequest(
            collections=[PAGES],
            scope=vector_pb2.Scope(team_id="team-a", environment_id="staging"),
            query_text="Pricing plans for teams",
            mode=vector_pb2.SEARCH_MODE_VECTOR,
        )
    )
    assert found.results[0].document.id == "staging-1"
    assert found.results[0].vector_distance < 1e-5  # the very vector of the same text

"""A collection never mixes models: a changed model is FAILED_PRECONDITION naming Reindex, and
Reindex rebuilds the collection beside the old table, which keeps answering meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from loom.vector.v1 import vector_pb2

from tests.support import hash_embedder, raises_status, serving_vector, vector_settings
from tests.vector.conftest import doc, ids, search, stats, upsert

ROWS = 2000
RUNNING = vector_pb2.ReindexProgress.STATE_RUNNING
SUCCEEDED = vector_pb2.ReindexProgress.STATE_SUCCEEDED
FAILED = vector_pb2.ReindexProgress.STATE_FAILED


def _fill(tmp_path: Path) -> None:
    with serving_vector(vector_settings(tmp_path), hash_embedder(384)) as server:
        for start in range(0, ROWS, 1000):
            rows = range(start, start + 1000)
            upsert(server.service, [doc(f"r{i}", f"filler row number {i}") for i in rows])
        upsert(
            server.service,
            [
                doc("pricing", "pricing plans and what they cost"),
                doc("doomed", "a page that is deleted during the reindex"),
            ],
        )
        assert stats(server.service).dimensions == 384


def test_model_change_needs_reindex_and_search_answers_during_it(tmp_path: Path) -> None:
    _fill(tmp_path)
    # Restarted with another size of vectors: 256 instead of 384. Each model call is slowed
    # down so that the reindex is still running while we watch it.
    slow = hash_embedder(256, delay=0.15)
    with serving_vector(vector_settings(tmp_path), slow) as server:
        stub = server.service
        before = stats(stub)
        assert not before.model_matches
        assert (before.dimensions, before.configured_dimensions) == (384, 256)

        with raises_status(grpc.StatusCode.FAILED_PRECONDITION) as err:
            search(stub, "pricing plans")
        assert err["reason"] == "MODEL_MISMATCH"
        assert "loom.vector.v1.VectorService/Reindex" in err["message"]
        assert "COLLECTION_PAGES" in err["message"]
        with raises_status(grpc.StatusCode.FAILED_PRECONDITION) as err:
            upsert(stub, [doc("new", "a new page")])
        assert "Reindex" in err["message"]
        assert slow.calls == 0, "nothing was embedded with the wrong model"
        # Full text mixes no vectors: it keeps working.
        full_text = search(stub, "pricing", mode=vector_pb2.SEARCH_MODE_FULL_TEXT)
        assert ids(full_text) == ["pricing"]

        started = stub.Reindex(vector_pb2.ReindexRequest(collection=vector_pb2.COLLECTION_PAGES))
        progress = started.progress
        assert progress.state == RUNNING
        assert (progress.source_model, progress.source_dimensions) == ("loom-hash-ngram-v1", 384)
        assert progress.target_dimensions == 256
        assert progress.total_rows == ROWS + 2
        assert progress.target_table == "page_embeddings__g2"
        again = stub.Reindex(vector_pb2.ReindexRequest(collection=vector_pb2.COLLECTION_PAGES))
        assert again.progress.target_table == progress.target_table, "one reindex at a time"

        # Writes during the reindex land in the new table; searches read the old one.
        upsert(stub, [doc("during", "written during the reindex")])
        stub.DeleteDocuments(
            vector_pb2.DeleteDocumentsRequest(
                collection=vector_pb2.COLLECTION_PAGES,
                scope=vector_pb2.Scope(team_id="team-a"),
                ids=["doomed"],
            )
        )
        answered_while_running = 0
        seen_progress = set()
        deadline = time.monotonic() + 90
        while True:
            current = stats(stub).reindex
            if current.state != RUNNING or time.monotonic() > deadline:
                break
            seen_progress.add(current.done_rows)
            found = search(stub, "pricing plans")  # HYBRID, old table, old model
            assert ids(found)[0] == "pricing"
            answered_while_running += 1
        assert current.state == SUCCEEDED, current
        assert answered_while_running >= 3
        assert len(seen_progress) >= 2, "progress is recorded as rows are done"
        assert current.done_rows == current.total_rows

        after = stats(stub)
        assert after.model_matches
        assert (after.dimensions, after.table_name) == (256, "page_embeddings__g2")
        assert after.row_count == ROWS + 2  # + during, - doomed
        found = search(stub, "pricing plans")
        assert ids(found)[0] == "pricing"
        assert "doomed" not in ids(search(stub, "deleted during the reindex", limit=50))
        assert ids(search(stub, "written during the reindex"))[0] == "during"
        assert upsert(stub, [doc("after", "a page after the reindex")]).dimensions == 256

    # The swap is durable: a restart opens the new table, and the old one is gone.
    with serving_vector(vector_settings(tmp_path), hash_embedder(256)) as server:
        reopened = stats(server.service)
        assert reopened.table_name == "page_embeddings__g2"
        assert reopened.model_matches
        assert reopened.reindex.state == SUCCEEDED
        assert ids(search(server.service, "pricing plans"))[0] == "pricing"
    assert not (tmp_path / "lancedb" / "page_embeddings.lance").exists()


def test_reindex_interrupted_by_shutdown_keeps_the_old_table(tmp_path: Path) -> None:
    _fill(tmp_path)
    with serving_vector(vector_settings(tmp_path), hash_embedder(256, delay=0.5)) as server:
        started = server.service.Reindex(
            vector_pb2.ReindexRequest(collection=vector_pb2.COLLECTION_PAGES)
        )
        assert started.progress.state == RUNNING
    # Stopped mid-way: the unfinished table is dropped and the old one is still the collection.
    with serving_vector(vector_settings(tmp_path), hash_embedder(384)) as server:
        reopened = stats(server.service)
        assert reopened.table_name == "page_embeddings"
        assert reopened.model_matches
        assert reopened.row_count == ROWS + 2
        assert reopened.reindex.state == FAILED
        assert reopened.reindex.error
        assert ids(search(server.service, "pricing plans"))[0] == "pricing"
    assert not (tmp_path / "lancedb" / "page_embeddings__g2.lance").exists()

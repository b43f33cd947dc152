"""vector_service's and image_worker's metrics, scraped over HTTP from real processes' endpoints
(in process, loopback port 0) after real calls: tables, embeddings, searches; jobs, stages,
bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from loom.vector.v1 import vector_pb2

from tests.images.helpers import picture
from tests.observability.conftest import ObservedFactory
from tests.support import SERVICE_TOKEN, hash_embedder, scrape, serving_vector, vector_settings


@pytest.fixture
def backend() -> str:
    """What these tests watch does not depend on content_service's database backend."""
    return "sqlite"


def _documents(n: int, text: str = "a page about pricing") -> list[vector_pb2.Document]:
    scope = vector_pb2.Scope(team_id="t1", site_id="s1", environment_id="e1")
    return [
        vector_pb2.Document(id=f"doc-{i}", scope=scope, source_id=f"doc-{i}", text=f"{text} {i}")
        for i in range(n)
    ]


def test_vector_tables_embeddings_and_searches(tmp_path: Path) -> None:
    settings = vector_settings(tmp_path, metrics_port=0)
    with serving_vector(settings, hash_embedder()) as vector:
        assert vector.running is not None
        port = vector.running.metrics_port
        service = vector.stub(SERVICE_TOKEN)
        before = scrape(port)
        assert before.value("loom_vector_rows", collection="pages") == 0
        assert before.value("loom_vector_index_state", collection="pages", state="unspecified") == 1
        model = {"provider": "hash"}
        upsert = vector_pb2.UpsertDocumentsRequest(
            collection=vector_pb2.COLLECTION_PAGES, documents=_documents(3)
        )
        service.UpsertDocuments(upsert)
        written = scrape(port)
        assert written.value("loom_vector_rows", collection="pages") == 3
        assert written.value("loom_vector_table_version", collection="pages") >= 1
        assert written.value("loom_vector_fragments", collection="pages") >= 1
        assert written.value("loom_vector_index_state", collection="pages", state="not_needed") == 1
        assert written.value("loom_vector_index_state", collection="pages", state="ready") == 0
        assert written.value("loom_vector_unindexed_rows", collection="pages") == 0
        assert written.value("loom_vector_rows", collection="posts") == 0
        assert written.value("loom_scrape_collector_up", collector="collections") == 1
        texts = "loom_embedding_texts_total"
        assert written.value(texts, **model) - before.value(texts, **model) == 3
        calls = "loom_embedding_calls_total"
        assert written.value(calls, **model) - before.value(calls, **model) == 1
        seconds = "loom_embedding_seconds_count"
        assert written.value(seconds, **model) - before.value(seconds, **model) == 1
        created = {"collection": "pages", "outcome": "created"}
        upserted = "loom_vector_upserted_documents_total"
        assert written.value(upserted, **created) - before.value(upserted, **created) == 3

        service.UpsertDocuments(upsert)  # the same texts: no model call
        again = scrape(port)
        assert again.value(texts, **model) == written.value(texts, **model)
        unchanged = {"collection": "pages", "outcome": "unchanged"}
        assert again.value(upserted, **unchanged) - written.value(upserted, **unchanged) == 3
        assert again.value("loom_vector_table_version", collection="pages") >= written.value(
            "loom_vector_table_version", collection="pages"
        )

        scope = vector_pb2.Scope(team_id="t1")
        for mode in (
            vector_pb2.SEARCH_MODE_VECTOR,
            vector_pb2.SEARCH_MODE_FULL_TEXT,
            vector_pb2.SEARCH_MODE_HYBRID,
        ):
            service.Search(
                vector_pb2.SearchRequest(
                    collections=[vector_pb2.COLLECTION_PAGES],
                    scope=scope,
                    # A text of its own per mode: the query cache would answer a repeat.
                    query_text=f"pricing {mode}",
                    mode=mode,
                )
            )
        searched = scrape(port)
        for mode_label in ("vector", "full_text", "hybrid"):
            name = "loom_vector_search_seconds_count"
            assert searched.value(name, mode=mode_label) - again.value(name, mode=mode_label) == 1
        # The vector and hybrid searches each embedded their query.
        assert searched.value(calls, **model) - again.value(calls, **model) == 2
        rpc = {"grpc_service": "loom.vector.v1.VectorService", "grpc_method": "Search"}
        assert (
            searched.value("grpc_server_handled_total", **rpc, grpc_code="OK")
            - again.value("grpc_server_handled_total", **rpc, grpc_code="OK")
            == 3
        )


def test_worker_jobs_stages_and_bytes(observe: ObservedFactory) -> None:
    stack = observe()
    worker = stack.start_worker()
    port = worker.metrics_port
    assert port
    before = scrape(port)
    original = picture("PNG", 300, 200, noise_seed=1)
    image = stack.wait_for(stack.upload(original).id)
    assert image.state == image.STATE_COMPLETED
    done = scrape(port)

    def moved(name: str, **labels: str) -> float:
        return done.value(name, **labels) - before.value(name, **labels)

    assert moved("loom_worker_jobs_claimed_total") == 1
    assert moved("loom_worker_jobs_total", outcome="completed") == 1
    assert done.value("loom_worker_jobs_in_progress") == 0
    for stage in ("download", "decode", "resize", "metadata", "upload", "index", "complete"):
        assert moved("loom_worker_stage_seconds_count", stage=stage) == 1, stage
    for fmt in ("webp", "avif"):
        assert moved("loom_worker_stage_seconds_count", stage="encode", format=fmt) == 1, fmt
        assert moved("loom_worker_uploaded_bytes_total", format=fmt) > 0
    assert moved("loom_worker_downloaded_bytes_total") == len(original)
    assert moved("loom_worker_stage_seconds_sum", stage="decode") > 0

    bad = stack.wait_for(stack.upload(b"\x89PNG\r\n\x1a\n not an image", "bad.png").id)
    assert bad.state == bad.STATE_FAILED
    failed = scrape(port)
    assert (
        failed.value("loom_worker_jobs_total", outcome="failed")
        - done.value("loom_worker_jobs_total", outcome="failed")
        == 1
    )
    # The worker's calls were counted by the servers they reached, too.
    content = stack.content_metrics()
    assert (
        content.value("grpc_server_handled_total", grpc_method="CompleteImageJob", grpc_code="OK")
        >= 1
    )
    assert (
        content.value(
            "grpc_server_handled_total", grpc_method="UploadImageVariant", grpc_type="client_stream"
        )
        >= 4
    )
    assert (
        content.value(
            "grpc_server_handled_total", grpc_method="DownloadImage", grpc_type="server_stream"
        )
        >= 1
    )

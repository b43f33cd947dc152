"""Image documents: written by the worker, checked and rebuilt by content_service from what
the job stored (file name, alt text, vision caption and tags), deleted with the image."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from loom.content.v1 import images_pb2
from loom.vector.v1 import vector_pb2

from image_worker.worker import Worker
from tests.content.tenants_and_pages import Tenant
from tests.images.helpers import images_stub, upload
from tests.indexing.conftest import Stack
from tests.support import wait_until, worker_settings
from tests.worker import images
from tests.worker.vision_stub import VisionServer


@pytest.fixture
def worker(stack: Stack, tmp_path: Path, vision_server: VisionServer) -> Iterator[Worker]:
    assert stack.vector is not None
    settings = worker_settings(
        tmp_path / "worker",
        stack.content.address,
        stack.vector.address,
        concurrency=1,
        widths=(64,),
        formats=("webp",),
        claim_wait_seconds=2.0,
        vision_base_url=vision_server.base_url,
        vision_model="test-vision",
    )
    running = Worker(settings)
    running.start()
    yield running
    running.stop(grace=0)


def _upload(t: Tenant, name: str, width: int, alt_text: str = "") -> images_pb2.Image:
    data = images.photo_jpeg(width, 90)
    return upload(
        images_stub(t.client),
        t.env_id,
        data,
        filename=name,
        mime_type="",
        alt_text=alt_text,
        chunk=len(data),
    )


def _completed(t: Tenant, image_ids: Sequence[str]) -> bool:
    stub = images_stub(t.client)
    states = [stub.GetImage(images_pb2.GetImageRequest(id=i)).state for i in image_ids]
    return all(s == images_pb2.Image.STATE_COMPLETED for s in states)


@pytest.mark.usefixtures("worker")
def test_content_rebuilds_the_workers_image_text_and_repairs_a_lost_document(
    stack: Stack, tenant: Tenant
) -> None:
    described = _upload(tenant, "gallery  wall.jpg", 160)  # alt text, caption, tags from vision
    named = _upload(tenant, "logo.jpg", 170, alt_text="Our logo")  # alt text given: kept
    wait_until(lambda: _completed(tenant, [described.id, named.id]), what="both completed")
    stack.drained()
    docs = stack.documents(tenant, "images")
    assert sorted(docs) == sorted([described.id, named.id])
    # Same text by sha256 on both sides: the worker's document is what content expects.
    assert stack.reconcile(tenant).drift_count == 0

    assert stack.vector is not None
    stack.vector.service.DeleteDocuments(
        vector_pb2.DeleteDocumentsRequest(
            collection=vector_pb2.COLLECTION_IMAGES,
            scope=vector_pb2.Scope(team_id=tenant.team_id),
            ids=[described.id],
        )
    )
    report = stack.reconcile(tenant, repair=True)
    images_drift = next(c for c in report.collections if c.collection == "images")
    assert (images_drift.missing_count, list(images_drift.sample_ids)) == (1, [described.id])
    assert report.queued_count == 1
    stack.drained()
    assert stack.documents(tenant, "images")[described.id].text_sha256 == (
        docs[described.id].text_sha256
    )
    assert stack.reconcile(tenant).drift_count == 0
    found = stack.vector.service.Search(
        vector_pb2.SearchRequest(
            collections=[vector_pb2.COLLECTION_IMAGES],
            scope=vector_pb2.Scope(team_id=tenant.team_id),
            query_text="minimalism",
            mode=vector_pb2.SEARCH_MODE_FULL_TEXT,
        )
    )
    texts = {r.document.id: r.document.text for r in found.results}
    # The repaired document holds the vision caption and tags, as the worker wrote them.
    assert "Minimalist art on a gallery wall." in texts[described.id]
    assert "tags: gallery, minimalism, red square" in texts[described.id]

    images_stub(tenant.client).DeleteImage(images_pb2.DeleteImageRequest(id=named.id))
    stack.drained()
    assert list(stack.documents(tenant, "images")) == [described.id]

"""The worker on the job queue: several workers, dead workers, a vector_service outage, and
stopping (in process and as `python -m image_worker` with SIGTERM)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from loom.content.v1 import images_pb2
from loom.vector.v1 import vector_pb2
from PIL import Image as PILImage

from image_worker.worker import SHUTDOWN_REASON
from tests.support import SERVICE_TOKEN, wait_until
from tests.worker import images
from tests.worker.conftest import Image, Stack, StackFactory

REPO = Path(__file__).resolve().parents[2]


def test_two_workers_process_every_image_exactly_once(stack: Stack) -> None:
    first, second = stack.start_worker(), stack.start_worker()
    uploaded = [
        stack.upload(images.photo_jpeg(160 + 8 * i, 120, seed=i), f"photo-{i}.jpg")
        for i in range(10)
    ]

    for image in uploaded:
        done = stack.wait_for(image.id)
        assert done.state == Image.STATE_COMPLETED, done.error
        # One claim each: nobody processed an image another worker had.
        assert done.attempts == 1
        keys = [(v.width, v.format) for v in done.variants]
        assert sorted(keys) == sorted({(w, f) for w in (64, 128) for f in ("webp", "avif")})
    stats = [first.stats, second.stats]
    assert sum(s.claimed for s in stats) == 10
    assert sum(s.completed for s in stats) == 10
    assert sum(s.failed + s.retried + s.released + s.dropped for s in stats) == 0
    # One document per image in the index.
    collection = stack.vector.service.GetCollectionStats(
        vector_pb2.GetCollectionStatsRequest(collection=vector_pb2.COLLECTION_IMAGES)
    ).stats
    assert collection.row_count == 10
    found = stack.search("photo jpg")
    assert {r.document.id for r in found} == {i.id for i in uploaded}


def _solid_webp(width: int, height: int) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (0, 255, 0)).save(out, "WEBP")
    return out.getvalue()


def test_a_dead_workers_job_is_completed_by_another_after_its_lease_expires(
    stack_factory: StackFactory,
) -> None:
    stack = stack_factory(lease_seconds=2)
    uploaded = stack.upload(images.photo_jpeg(200, 100), "orphan.jpg")
    # The dead worker: claims, uploads one (green) variant under its lease, then is gone.
    dead = stack.jobs.ClaimImageJob(images_pb2.ClaimImageJobRequest(worker="doomed")).job
    assert dead.image_id == uploaded.id

    def variant() -> Iterator[images_pb2.UploadImageVariantRequest]:
        yield images_pb2.UploadImageVariantRequest(
            image_id=dead.image_id, lease_token=dead.lease_token, width=64, height=32, format="webp"
        )
        yield images_pb2.UploadImageVariantRequest(chunk=_solid_webp(64, 32))

    stack.jobs.UploadImageVariant(variant())
    worker = stack.start_worker()

    image = stack.wait_for(uploaded.id, timeout=20)

    assert image.state == Image.STATE_COMPLETED, image.error
    assert image.attempts == 2
    assert len(image.variants) == 4
    # The dead worker's green variant was replaced by the live worker's.
    picture = PILImage.open(io.BytesIO(stack.download(image.id, (64, "webp"))))
    assert picture.convert("RGB").getpixel((2, 2)) != (0, 255, 0)
    assert worker.stats.completed == 1


def test_vector_service_down_holds_the_job_until_it_is_back(
    stack_factory: StackFactory,
) -> None:
    # Leases of 2 s: the job outlives several of them, so the worker must keep extending.
    stack = stack_factory(lease_seconds=2)
    stack.vector.stop()
    worker = stack.start_worker()
    uploaded = stack.upload(images.photo_jpeg(200, 100), "patient.jpg", alt_text="a patient cat")

    time.sleep(3.5)
    waiting = stack.get(uploaded.id)
    assert (waiting.state, waiting.attempts) == (Image.STATE_PROCESSING, 1)

    stack.vector.start()
    image = stack.wait_for(uploaded.id, timeout=20)

    assert image.state == Image.STATE_COMPLETED, image.error
    assert image.attempts == 1
    assert [r.document.id for r in stack.search("patient cat")] == [image.id]
    assert worker.stats.completed == 1


def test_index_failures_past_the_retry_window_give_the_job_back_with_a_reason(
    stack_factory: StackFactory,
) -> None:
    stack = stack_factory(max_attempts=1)
    stack.vector.stop()
    # With one attempt allowed, the retryable failure is also the last: the reason stays.
    stack.start_worker(index_retry_seconds=0.3)
    uploaded = stack.upload(images.photo_jpeg(200, 100), "unlucky.jpg")

    image = stack.wait_for(uploaded.id, timeout=20)

    assert image.state == Image.STATE_FAILED
    # content_service prefixes "gave up after 1 attempts: ".
    assert "could not index the image text in vector_service" in image.error, image.error
    assert "UNAVAILABLE" in image.error
    assert not image.variants


def test_stop_lets_an_in_flight_job_finish_within_the_grace_period(stack: Stack) -> None:
    stack.vector.stop()
    worker = stack.start_worker()
    uploaded = stack.upload(images.photo_jpeg(200, 100), "finishing.jpg")
    # The worker holds the job (PROCESSING alone is not enough: the lease is taken before the
    # claim's answer reaches the worker; see docs/worker.md, "Stopping").
    wait_until(lambda: worker.stats.claimed == 1, what="the worker to hold the job")
    stopper = threading.Thread(target=worker.stop, args=(20.0,))
    stopper.start()
    time.sleep(0.5)
    assert stopper.is_alive(), (worker.stats, stack.get(uploaded.id))  # waiting for the job

    stack.vector.start()
    stopper.join(timeout=20)

    assert not stopper.is_alive()
    assert stack.get(uploaded.id).state == Image.STATE_COMPLETED
    assert (worker.stats.completed, worker.stats.released) == (1, 0)
    assert not worker.alive


def test_stop_gives_back_a_job_that_cannot_finish_in_the_grace_period(stack: Stack) -> None:
    stack.vector.stop()
    # Two slots: the idle one is long-polling when the job is given back, and the server must
    # not lease the job to that claim, which the stopping worker has cancelled.
    worker = stack.start_worker(concurrency=2)
    uploaded = stack.upload(images.photo_jpeg(200, 100), "released.jpg")
    stack.wait_for(uploaded.id, (Image.STATE_PROCESSING,))
    time.sleep(0.3)

    started = time.monotonic()
    worker.stop(grace=0.5)

    assert time.monotonic() - started < 3
    image = stack.get(uploaded.id)
    assert (image.state, image.error, image.attempts) == (
        Image.STATE_PENDING,
        SHUTDOWN_REASON,
        1,
    )
    assert worker.stats.released == 1
    # Not lost: the next worker completes it.
    stack.vector.start()
    stack.start_worker()
    done = stack.wait_for(uploaded.id)
    assert (done.state, done.attempts) == (Image.STATE_COMPLETED, 2)


def test_python_m_image_worker_processes_and_stops_on_sigterm(stack: Stack) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    env.update(
        DATA_DIR=str(stack.tmp_path),
        LOOM_SERVICE_TOKEN=SERVICE_TOKEN,
        WORKER_CONTENT_ADDRESS=stack.content.address,
        WORKER_VECTOR_ADDRESS=stack.vector.address,
        WORKER_WIDTHS="64",
        WORKER_FORMATS="webp",
        WORKER_CONCURRENCY="1",
        WORKER_GRACE_SECONDS="0.5",
        PYTHONUNBUFFERED="1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "image_worker"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")))
    reader.start()
    try:
        done = stack.upload(images.photo_jpeg(200, 100), "by-process.jpg")
        image = stack.wait_for(done.id, timeout=30)
        assert image.state == Image.STATE_COMPLETED, image.error
        assert [(v.width, v.format) for v in image.variants] == [(64, "webp")]

        # A job in flight when SIGTERM comes, and unable to finish: it is given back.
        stack.vector.stop()
        stuck = stack.upload(images.photo_jpeg(210, 100), "in-flight.jpg")
        # In flight in the worker: it logs its first failed indexing try, naming the image.
        wait_until(lambda: any(stuck.id in line for line in lines), what="the job in flight")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(10)
        process.stderr.close()
    stderr = "".join(lines)

    assert process.returncode == 0, stderr
    assert "stopped" in stderr
    released = stack.get(stuck.id)
    assert (released.state, released.error) == (Image.STATE_PENDING, SHUTDOWN_REASON)

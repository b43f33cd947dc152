"""ImageJobService: claims with leases, fencing, retries, long-poll, exactly-once claims."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from loom.content.v1 import images_pb2, images_pb2_grpc
from sqlalchemy import update

from content_service.db.models import Image as ImageRow
from tests.content.tenants_and_pages import make_tenant, struct
from tests.images.helpers import (
    claim,
    complete,
    download,
    fail,
    images_stub,
    jobs_stub,
    media_files,
    picture,
    sha,
    upload,
    upload_variant,
)
from tests.support import SERVICE_TOKEN, ContentServer, ContentServerFactory, raises_status

Image = images_pb2.Image


def expire_leases(server: ContentServer) -> None:
    """Moves every lease into the past, as if its time had run out."""
    with server.db.write() as s:
        s.execute(
            update(ImageRow).where(ImageRow.lease_token.is_not(None)).values(lease_expires_at=0)
        )


def test_claim_extend_variants_complete(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    images, jobs = images_stub(t.client), jobs_stub(content_server.admin)
    data = picture("PNG", 120, 80)
    image = upload(images, t.env_id, data, filename="cat.png", alt_text="a cat")

    job = claim(jobs).job
    assert (job.image_id, job.team_id, job.site_id, job.environment_id) == (
        image.id,
        t.team_id,
        t.site_id,
        t.env_id,
    )
    assert (job.filename, job.mime_type, job.alt_text, job.size_bytes, job.sha256) == (
        "cat.png",
        "image/png",
        "a cat",
        len(data),
        sha(data),
    )
    assert job.lease_token
    assert (job.attempt, job.max_attempts) == (1, 5)
    assert job.lease_expire_time.seconds >= time.time() + 59
    assert not claim(jobs).HasField("job")  # nothing else to do
    got = images.GetImage(images_pb2.GetImageRequest(id=image.id))
    assert (got.state, got.attempts) == (Image.STATE_PROCESSING, 1)

    # The worker reads the original with the service token.
    original = download(images_stub(content_server.admin.as_key(SERVICE_TOKEN)), job.image_id)
    assert original[1] == data
    extended = jobs.ExtendImageLease(
        images_pb2.ExtendImageLeaseRequest(image_id=job.image_id, lease_token=job.lease_token)
    )
    assert extended.lease_expire_time.seconds >= job.lease_expire_time.seconds

    webp = picture("WEBP", 60, 40)
    avif = picture("AVIF", 30, 20)
    v1 = upload_variant(jobs, job, webp, 60, 40, "webp")
    assert (v1.width, v1.height, v1.format, v1.size_bytes, v1.mime_type) == (
        60,
        40,
        "webp",
        len(webp),
        "image/webp",
    )
    upload_variant(jobs, job, avif, 30, 20, "avif")
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        upload_variant(jobs, job, picture("PNG", 30, 20), 30, 20, "webp")  # not a WebP
    assert err["fields"] == ["chunk"]
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION) as err:
        jobs.CompleteImageJob(
            images_pb2.CompleteImageJobRequest(
                image_id=job.image_id,
                lease_token=job.lease_token,
                width=120,
                height=80,
                variants=[images_pb2.ImageVariantKey(width=90, format="webp")],
            )
        )
    assert err["reason"] == "VARIANT_NOT_UPLOADED"

    done = complete(
        jobs,
        job,
        120,
        80,
        [(60, "webp"), (30, "avif")],
        metadata=struct({"format": "PNG", "colours": ["#c81e1e"], "blurhash": "L00"}),
        generated_alt_text="ignored: the uploader gave one",
    )
    assert (done.state, done.width, done.height, done.alt_text) == (
        Image.STATE_COMPLETED,
        120,
        80,
        "a cat",
    )
    assert dict(done.metadata)["format"] == "PNG"
    assert [(v.format, v.width) for v in done.variants] == [("avif", 30), ("webp", 60)]
    assert images.GetImage(images_pb2.GetImageRequest(id=image.id)) == done

    first, got, _ = download(images, image.id, (60, "webp"))
    assert got == webp
    assert (first.mime_type, first.size_bytes, first.width, first.height, first.sha256) == (
        "image/webp",
        len(webp),
        60,
        40,
        sha(webp),
    )
    assert download(images, image.id, (30, "avif"))[1] == avif

    # The job is over: the token is dead.
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION) as err:
        jobs.ExtendImageLease(
            images_pb2.ExtendImageLeaseRequest(image_id=job.image_id, lease_token=job.lease_token)
        )
    assert err["reason"] == "LEASE_LOST"

    # Deleting the image removes its variants' files too.
    media = content_server.settings.media_dir
    assert len(media_files(media, "variants")) == 2
    images.DeleteImage(images_pb2.DeleteImageRequest(id=image.id))
    assert media_files(media, "variants") == []
    assert media_files(media, "originals") == []


def test_generated_alt_text_fills_an_empty_one(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    jobs = jobs_stub(content_server.admin)
    upload(images_stub(t.client), t.env_id, picture())
    job = claim(jobs).job
    done = jobs.CompleteImageJob(
        images_pb2.CompleteImageJobRequest(
            image_id=job.image_id,
            lease_token=job.lease_token,
            width=64,
            height=48,
            generated_alt_text="A red rectangle",
        )
    )
    assert done.alt_text == "A red rectangle"
    assert list(done.variants) == []


def test_jobs_need_the_service_token(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    upload(images_stub(t.client), t.env_id, picture())
    team_jobs = t.client.stub(images_pb2_grpc.ImageJobServiceStub)
    with raises_status(grpc.StatusCode.PERMISSION_DENIED):
        claim(team_jobs)
    job = claim(jobs_stub(content_server.admin)).job
    with raises_status(grpc.StatusCode.PERMISSION_DENIED):
        team_jobs.CompleteImageJob(
            images_pb2.CompleteImageJobRequest(
                image_id=job.image_id, lease_token=job.lease_token, width=64, height=48
            )
        )


def test_expired_lease_is_taken_over_and_the_old_token_is_fenced(
    content_servers: ContentServerFactory,
) -> None:
    server = content_servers(lease_seconds=1)
    t = make_tenant(server.admin)
    images, jobs = images_stub(t.client), jobs_stub(server.admin)
    image = upload(images, t.env_id, picture("PNG", 50, 50))

    old = claim(jobs).job
    # A variant uploaded under the old lease, before it runs out.
    stale = picture("WEBP", 25, 25, colour=(1, 2, 3))
    upload_variant(jobs, old, stale, 25, 25, "webp")
    while time.time() < old.lease_expire_time.seconds + 0.05:  # at most ~2 s
        time.sleep(0.1)
    new = claim(jobs).job
    assert new.image_id == old.image_id
    assert new.lease_token != old.lease_token
    assert new.attempt == 2
    before = images.GetImage(images_pb2.GetImageRequest(id=image.id))

    calls = {
        "extend": lambda: jobs.ExtendImageLease(
            images_pb2.ExtendImageLeaseRequest(image_id=old.image_id, lease_token=old.lease_token)
        ),
        "variant": lambda: upload_variant(jobs, old, picture("WEBP", 20, 20), 20, 20, "webp"),
        "complete": lambda: jobs.CompleteImageJob(
            images_pb2.CompleteImageJobRequest(
                image_id=old.image_id, lease_token=old.lease_token, width=50, height=50
            )
        ),
        "fail": lambda: fail(jobs, old, "x", retryable=False),
    }
    for name, call in calls.items():
        with raises_status(grpc.StatusCode.FAILED_PRECONDITION) as err:
            call()
        assert err["reason"] == "LEASE_LOST", name
    assert images.GetImage(images_pb2.GetImageRequest(id=image.id)) == before  # unchanged

    # The variant from the old lease does not count for the new one ...
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION) as err:
        jobs.CompleteImageJob(
            images_pb2.CompleteImageJobRequest(
                image_id=new.image_id,
                lease_token=new.lease_token,
                width=50,
                height=50,
                variants=[images_pb2.ImageVariantKey(width=25, format="webp")],
            )
        )
    assert err["reason"] == "VARIANT_NOT_UPLOADED"
    # ... until uploaded again under it, which replaces the old file.
    fresh = picture("WEBP", 25, 25, colour=(9, 9, 9))
    upload_variant(jobs, new, fresh, 25, 25, "webp")
    assert len(media_files(server.settings.media_dir, "variants")) == 1
    done = jobs.CompleteImageJob(
        images_pb2.CompleteImageJobRequest(
            image_id=new.image_id,
            lease_token=new.lease_token,
            width=50,
            height=50,
            variants=[images_pb2.ImageVariantKey(width=25, format="webp")],
        )
    )
    assert (done.state, done.attempts, len(done.variants)) == (Image.STATE_COMPLETED, 2, 1)
    assert download(images, image.id, (25, "webp"))[1] == fresh


def test_retryable_failures_stop_at_max_attempts(content_servers: ContentServerFactory) -> None:
    server = content_servers(max_attempts=2)
    t = make_tenant(server.admin)
    images, jobs = images_stub(t.client), jobs_stub(server.admin)
    image = upload(images, t.env_id, picture())

    first = claim(jobs).job
    back = fail(jobs, first, "vector_service unavailable", retryable=True)
    assert (back.state, back.attempts, back.error) == (
        Image.STATE_PENDING,
        1,
        "vector_service unavailable",
    )
    second = claim(jobs).job
    assert (second.attempt, second.previous_error) == (2, "vector_service unavailable")
    final = fail(jobs, second, "vector_service unavailable again", retryable=True)
    assert final.state == Image.STATE_FAILED
    assert final.attempts == 2
    assert "vector_service unavailable again" in final.error
    assert not claim(jobs).HasField("job")
    assert images.GetImage(images_pb2.GetImageRequest(id=image.id)) == final


def test_expired_leases_count_as_attempts(content_servers: ContentServerFactory) -> None:
    server = content_servers(max_attempts=2)
    t = make_tenant(server.admin)
    images, jobs = images_stub(t.client), jobs_stub(server.admin)
    image = upload(images, t.env_id, picture())
    assert claim(jobs).job.attempt == 1
    expire_leases(server)
    second = claim(jobs).job
    assert second.attempt == 2
    upload_variant(jobs, second, picture("WEBP", 10, 10), 10, 10, "webp")
    expire_leases(server)
    assert not claim(jobs).HasField("job")  # out of attempts: failed, not handed out
    failed = images.GetImage(images_pb2.GetImageRequest(id=image.id))
    assert failed.state == Image.STATE_FAILED
    assert "gave up after 2 attempts" in failed.error
    assert list(failed.variants) == []
    assert media_files(server.settings.media_dir, "variants") == []


def test_a_non_retryable_failure_ends_at_once(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    images, jobs = images_stub(t.client), jobs_stub(content_server.admin)
    upload(images, t.env_id, picture())
    job = claim(jobs).job
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as err:
        jobs.FailImageJob(
            images_pb2.FailImageJobRequest(image_id=job.image_id, lease_token=job.lease_token)
        )
    assert err["fields"] == ["reason"]
    failed = fail(jobs, job, "the file is truncated", retryable=False)
    assert (failed.state, failed.attempts, failed.error) == (
        Image.STATE_FAILED,
        1,
        "the file is truncated",
    )
    assert not claim(jobs).HasField("job")


def test_a_waiting_claim_wakes_up_when_an_image_arrives(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    jobs = jobs_stub(content_server.admin)
    result: dict[str, object] = {}

    def wait_for_job() -> None:
        result["response"] = claim(jobs, wait=20)
        result["returned"] = time.monotonic()

    waiter = threading.Thread(target=wait_for_job)
    started = time.monotonic()
    waiter.start()
    time.sleep(0.5)  # the claim is waiting now
    image = upload(images_stub(t.client), t.env_id, picture())
    uploaded = time.monotonic()
    waiter.join(timeout=25)
    response = result["response"]
    assert isinstance(response, images_pb2.ClaimImageJobResponse)
    assert response.job.image_id == image.id
    latency = float(result["returned"]) - uploaded  # type: ignore[arg-type]
    print(f"claim returned {latency * 1000:.0f} ms after the upload")
    assert latency < 5.0
    assert float(result["returned"]) - started < 10.0  # type: ignore[arg-type]


def test_a_claim_returns_empty_after_wait_and_before_the_deadline(
    content_server: ContentServer,
) -> None:
    jobs = jobs_stub(content_server.admin)
    start = time.monotonic()
    assert not claim(jobs, wait=1).HasField("job")
    waited = time.monotonic() - start
    assert 0.9 <= waited < 5
    start = time.monotonic()
    assert not claim(jobs, wait=20, timeout=1.5).HasField("job")  # OK, not DEADLINE_EXCEEDED
    assert time.monotonic() - start < 1.5


def test_concurrent_claimers_never_get_the_same_image(content_server: ContentServer) -> None:
    t = make_tenant(content_server.admin)
    images = images_stub(t.client)
    ids = {upload(images, t.env_id, picture("PNG", 16, 16, colour=(i, 0, 0))).id for i in range(20)}
    assert len(ids) == 20
    claimers = 4
    barrier = threading.Barrier(claimers)

    def work(_: int) -> list[str]:
        jobs = jobs_stub(content_server.admin)
        got = []
        barrier.wait()
        while True:
            job = claim(jobs).job
            if not job.image_id:
                return got
            got.append(job.image_id)
            jobs.CompleteImageJob(
                images_pb2.CompleteImageJobRequest(
                    image_id=job.image_id, lease_token=job.lease_token, width=16, height=16
                )
            )

    with ThreadPoolExecutor(claimers) as pool:
        per_claimer = list(pool.map(work, range(claimers)))
    claimed = [i for got in per_claimer for i in got]
    assert sorted(claimed) == sorted(ids)  # every image once, none twice
    done = images.ListImages(
        images_pb2.ListImagesRequest(environment_id=t.env_id, state=Image.STATE_COMPLETED)
    )
    assert {i.id for i in done.images} == ids
    assert all(i.attempts == 1 for i in done.images)


def test_waiting_claims_are_capped_so_they_cannot_hold_every_server_thread(
    content_servers: ContentServerFactory,
) -> None:
    server = content_servers(workers=2)  # at most one claim may wait
    jobs = jobs_stub(server.admin)
    waiter = threading.Thread(target=lambda: claim(jobs, wait=3))
    waiter.start()
    time.sleep(0.5)
    with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED) as err:
        claim(jobs, wait=3)
    assert err["reason"] == "TOO_MANY_WAITING_CLAIMS"
    assert not claim(jobs).HasField("job")  # not waiting: always answered
    waiter.join(timeout=10)
    assert not waiter.is_alive()

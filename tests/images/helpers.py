"""Builders for the image tests: images made with Pillow in memory, streamed uploads and
downloads, a completed job, a look at the media folder, and requests to the media HTTP
server."""

from __future__ import annotations

import hashlib
import http.client
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from google.protobuf import duration_pb2
from loom.content.v1 import images_pb2, images_pb2_grpc
from PIL import Image as PILImage

from tests.support import SERVICE_TOKEN, Clients, ContentServer, Stub

if TYPE_CHECKING:
    from tests.content.tenants_and_pages import Tenant


def picture(
    fmt: str = "PNG",
    width: int = 64,
    height: int = 48,
    colour: tuple[int, int, int] = (200, 30, 30),
    *,
    noise_seed: int | None = None,
) -> bytes:
    """An image file in memory: a plain colour, or (noise_seed) incompressible noise."""
    if noise_seed is None:
        image = PILImage.new("RGB", (width, height), colour)
    else:
        rng = random.Random(noise_seed)
        image = PILImage.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def images_stub(client: Clients) -> Stub:
    return client.stub(images_pb2_grpc.ImageServiceStub)


def jobs_stub(client: Clients) -> Stub:
    return client.as_key(SERVICE_TOKEN).stub(images_pb2_grpc.ImageJobServiceStub)


def upload_requests(
    environment_id: str,
    data: bytes,
    *,
    filename: str = "photo.png",
    mime_type: str = "image/png",
    alt_text: str = "",
    chunk: int = 64 * 1024,
) -> Iterator[images_pb2.UploadImageRequest]:
    yield images_pb2.UploadImageRequest(
        environment_id=environment_id, filename=filename, mime_type=mime_type, alt_text=alt_text
    )
    for start in range(0, len(data), chunk):
        yield images_pb2.UploadImageRequest(chunk=data[start : start + chunk])


def upload(stub: Stub, environment_id: str, data: bytes, **kwargs: Any) -> images_pb2.Image:
    result: images_pb2.Image = stub.UploadImage(upload_requests(environment_id, data, **kwargs))
    return result


def download(
    stub: Stub, image_id: str, variant: tuple[int, str] | None = None
) -> tuple[images_pb2.DownloadImageResponse, bytes, list[int]]:
    """(first message, the bytes, the size of each chunk)."""
    request = images_pb2.DownloadImageRequest(id=image_id)
    if variant is not None:
        request.variant.width, request.variant.format = variant
    responses = list(stub.DownloadImage(request))
    chunks = [r.chunk for r in responses[1:]]
    return responses[0], b"".join(chunks), [len(c) for c in chunks]


def claim(jobs: Stub, wait: float = 0.0, **kwargs: Any) -> images_pb2.ClaimImageJobResponse:
    request = images_pb2.ClaimImageJobRequest(worker="test")
    if wait:
        request.wait.CopyFrom(duration_pb2.Duration(seconds=int(wait), nanos=int(wait % 1 * 1e9)))
    response: images_pb2.ClaimImageJobResponse = jobs.ClaimImageJob(request, **kwargs)
    return response


def fail(jobs: Stub, job: images_pb2.ImageJob, reason: str, *, retryable: bool) -> images_pb2.Image:
    result: images_pb2.Image = jobs.FailImageJob(
        images_pb2.FailImageJobRequest(
            image_id=job.image_id, lease_token=job.lease_token, reason=reason, retryable=retryable
        )
    )
    return result


def upload_variant(
    jobs: Stub, job: images_pb2.ImageJob, data: bytes, width: int, height: int, fmt: str
) -> images_pb2.ImageVariant:
    def requests() -> Iterator[images_pb2.UploadImageVariantRequest]:
        yield images_pb2.UploadImageVariantRequest(
            image_id=job.image_id,
            lease_token=job.lease_token,
            width=width,
            height=height,
            format=fmt,
        )
        for start in range(0, len(data), 32 * 1024):
            yield images_pb2.UploadImageVariantRequest(chunk=data[start : start + 32 * 1024])

    result: images_pb2.ImageVariant = jobs.UploadImageVariant(requests())
    return result


def complete(
    jobs: Stub,
    job: images_pb2.ImageJob,
    width: int,
    height: int,
    variants: list[tuple[int, str]],
    **fields: Any,
) -> images_pb2.Image:
    """CompleteImageJob under the job's lease with these (width, format) variants."""
    result: images_pb2.Image = jobs.CompleteImageJob(
        images_pb2.CompleteImageJobRequest(
            image_id=job.image_id,
            lease_token=job.lease_token,
            width=width,
            height=height,
            variants=[images_pb2.ImageVariantKey(width=w, format=f) for w, f in variants],
            **fields,
        )
    )
    return result


def media_files(media_dir: Path, folder: str) -> list[Path]:
    root = media_dir / folder
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def fetch(server: ContentServer, target: str, method: str = "GET", **headers: str) -> Answer:
    """One request to the server's media port; `target` is a URL (its path is sent) or a raw
    request target, sent byte for byte."""
    if "://" in target:
        parts = urlsplit(target)
        assert parts.netloc == server.media_http, target
        target = parts.path
    host, port = server.media_http.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, target, headers={k.replace("_", "-"): v for k, v in headers.items()})
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


@dataclass
class Completed:
    image: images_pb2.Image
    original: bytes
    webp: bytes
    avif: bytes


def completed_image(server: ContentServer, t: Tenant, data: bytes | None = None) -> Completed:
    """An image through the whole job: uploaded, two variants, completed."""
    images, jobs = images_stub(t.client), jobs_stub(server.admin)
    original = data or picture("PNG", 120, 80, noise_seed=1)
    upload(images, t.env_id, original)
    job = claim(jobs).job
    webp, avif = picture("WEBP", 60, 40, noise_seed=2), picture("AVIF", 30, 20, noise_seed=3)
    upload_variant(jobs, job, webp, 60, 40, "webp")
    upload_variant(jobs, job, avif, 30, 20, "avif")
    done = complete(jobs, job, 120, 80, [(60, "webp"), (30, "avif")])
    return Completed(done, original, webp, avif)

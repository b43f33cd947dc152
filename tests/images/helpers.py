"""Builders for the image tests: images made with Pillow in memory, streamed uploads and
downloads, and a look at the media folder."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf import duration_pb2
from loom.content.v1 import images_pb2, images_pb2_grpc
from PIL import Image as PILImage

from tests.support import SERVICE_TOKEN, Clients, Stub


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


def media_files(media_dir: Path, folder: str) -> list[Path]:
    root = media_dir / folder
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []

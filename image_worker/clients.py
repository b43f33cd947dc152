"""The worker's gRPC clients: its image jobs on content_service, its image documents on
vector_service.

Both are servicekit.clients channels: every call carries the service token and a deadline.
The channels retry UNAVAILABLE (the call never reached a server, or the server is
restarting) a few times with backoff through gRPC's service config, for every method but
ClaimImageJob: a claim that reached the server but lost its answer would hold a lease nobody
works on, so the claim loop backs off itself instead.
CompleteImageJob and FailImageJob are retried too; when a retry answers LEASE_LOST, the first
try may have succeeded, which the worker checks with GetImage (docs/images.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, cast

import grpc
from google.protobuf import duration_pb2, struct_pb2
from loom.content.v1 import images_pb2, images_pb2_grpc
from loom.vector.v1 import vector_pb2, vector_pb2_grpc

from servicekit.clients import ChannelOption, Retry, error_details, open_channel

__all__ = [
    "CHUNK_BYTES",
    "ContentClient",
    "DownloadError",
    "ImageIndexClient",
    "Timeouts",
    "is_lease_lost",
]

# content_service refuses stream messages over 1 MiB.
CHUNK_BYTES: Final = 1024 * 1024

_CONTENT_RETRY: Final = Retry(
    methods=(
        ("loom.content.v1.ImageJobService", "ExtendImageLease"),
        ("loom.content.v1.ImageJobService", "UploadImageVariant"),
        ("loom.content.v1.ImageJobService", "CompleteImageJob"),
        ("loom.content.v1.ImageJobService", "FailImageJob"),
        ("loom.content.v1.ImageService", "DownloadImage"),
        ("loom.content.v1.ImageService", "GetImage"),
    ),
    max_attempts=4,
    initial_backoff_seconds=0.2,
    max_backoff_seconds=2.0,
)
_VECTOR_RETRY: Final = replace(
    _CONTENT_RETRY,
    methods=(
        ("loom.vector.v1.VectorService", "UpsertDocuments"),
        ("loom.vector.v1.VectorService", "DeleteDocuments"),
    ),
)
_OPTIONS: Final[Sequence[ChannelOption]] = (
    # A client stream is retried only while everything sent so far is still buffered: room
    # for a whole large variant, so its upload can be retried too.
    ("grpc.per_rpc_retry_buffer_size", 16 * 1024 * 1024),
    ("grpc.retry_buffer_size", 64 * 1024 * 1024),
    # Find a restarted service within seconds: gRPC's default reconnect backoff grows to two
    # minutes while a service is down, and jobs wait on it.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5000),
)


def _with_id(request_id: str) -> tuple[tuple[str, str], ...]:
    # The services log the caller's x-request-id: one id follows a job across all of them.
    return (("x-request-id", request_id),) if request_id else ()


def is_lease_lost(exc: grpc.RpcError) -> bool:
    return (
        exc.code() == grpc.StatusCode.FAILED_PRECONDITION
        and error_details(exc).reason == "LEASE_LOST"
    )


@dataclass(frozen=True)
class Timeouts:
    call: float = 10.0
    transfer: float = 120.0
    vector: float = 30.0


class DownloadError(Exception):
    """The original arrived but is not what the job describes (size or sha256)."""


class ContentClient:
    """The image job calls (claim, lease, download, upload, complete, fail) and GetImage.
    Calls without a deadline of their own get `timeouts.call`."""

    def __init__(self, address: str, token: str, timeouts: Timeouts) -> None:
        self._channel = open_channel(
            address, token, timeout=timeouts.call, retry=_CONTENT_RETRY, options=_OPTIONS
        )
        self._jobs = images_pb2_grpc.ImageJobServiceStub(self._channel)
        self._images = images_pb2_grpc.ImageServiceStub(self._channel)
        self._timeouts = timeouts

    def close(self) -> None:
        self._channel.close()

    def claim(self, wait: float, worker: str) -> grpc.CallFuture[images_pb2.ClaimImageJobResponse]:
        """Starts a ClaimImageJob long-poll; the future can be cancelled (shutdown)."""
        seconds = int(wait)
        request = images_pb2.ClaimImageJobRequest(
            wait=duration_pb2.Duration(seconds=seconds, nanos=int((wait - seconds) * 1e9)),
            worker=worker,
        )
        # The server answers "no job" a little before this deadline.
        return self._jobs.ClaimImageJob.future(request, timeout=wait + 5.0)

    def extend(self, image_id: str, lease_token: str, request_id: str) -> float:
        """Moves the lease's expiry; returns it (seconds since the epoch, server clock)."""
        response = self._jobs.ExtendImageLease(
            images_pb2.ExtendImageLeaseRequest(image_id=image_id, lease_token=lease_token),
            timeout=self._timeouts.call,
            metadata=_with_id(request_id),
        )
        stamp = response.lease_expire_time
        return float(stamp.seconds) + stamp.nanos / 1e9

    def download(self, job: images_pb2.ImageJob, max_bytes: int, request_id: str) -> bytes:
        """The original, checked against the job's size and sha256."""
        stream = self._images.DownloadImage(
            images_pb2.DownloadImageRequest(id=job.image_id),
            timeout=self._timeouts.transfer,
            metadata=_with_id(request_id),
        )
        expected = job.size_bytes
        # Never hold more than the job announced, whatever the stream sends.
        limit = min(expected, max_bytes) if expected else max_bytes
        digest = hashlib.sha256()
        parts: list[bytes] = []
        size = 0
        try:
            for message in stream:
                chunk = message.chunk
                size += len(chunk)
                if size > limit:
                    break
                digest.update(chunk)
                parts.append(chunk)
        finally:
            stream.cancel()  # type: ignore[no-untyped-call]
        if size > limit:
            raise DownloadError(
                f"the original is larger than the {limit} bytes the job announced"
                if limit == expected
                else f"the original is larger than the worker's limit of {max_bytes} bytes"
            )
        if expected and size != expected:
            raise DownloadError(f"the original arrived with {size} of {expected} bytes")
        if job.sha256 and digest.hexdigest() != job.sha256:
            raise DownloadError("the original's sha256 does not match the job's")
        return b"".join(parts)

    def upload_variant(
        self,
        job: images_pb2.ImageJob,
        width: int,
        height: int,
        fmt: str,
        data: bytes,
        request_id: str,
    ) -> images_pb2.ImageVariant:
        def messages() -> Iterator[images_pb2.UploadImageVariantRequest]:
            yield images_pb2.UploadImageVariantRequest(
                image_id=job.image_id,
                lease_token=job.lease_token,
                width=width,
                height=height,
                format=fmt,
            )
            for start in range(0, len(data), CHUNK_BYTES):
                yield images_pb2.UploadImageVariantRequest(chunk=data[start : start + CHUNK_BYTES])

        result: images_pb2.ImageVariant = self._jobs.UploadImageVariant(
            messages(), timeout=self._timeouts.transfer, metadata=_with_id(request_id)
        )
        return result

    def complete(
        self,
        job: images_pb2.ImageJob,
        *,
        width: int,
        height: int,
        metadata: dict[str, object],
        variants: Sequence[tuple[int, str]],
        generated_alt_text: str,
        request_id: str,
    ) -> images_pb2.Image:
        meta = struct_pb2.Struct()
        meta.update(cast("dict[str, Any]", metadata))
        request = images_pb2.CompleteImageJobRequest(
            image_id=job.image_id,
            lease_token=job.lease_token,
            width=width,
            height=height,
            metadata=meta,
            variants=[images_pb2.ImageVariantKey(width=w, format=f) for w, f in variants],
            generated_alt_text=generated_alt_text,
        )
        result: images_pb2.Image = self._jobs.CompleteImageJob(
            request, timeout=self._timeouts.call, metadata=_with_id(request_id)
        )
        return result

    def fail(
        self, job: images_pb2.ImageJob, reason: str, *, retryable: bool, request_id: str
    ) -> images_pb2.Image:
        result: images_pb2.Image = self._jobs.FailImageJob(
            images_pb2.FailImageJobRequest(
                image_id=job.image_id,
                lease_token=job.lease_token,
                reason=reason,
                retryable=retryable,
            ),
            timeout=self._timeouts.call,
            metadata=_with_id(request_id),
        )
        return result

    def get_image(self, image_id: str, request_id: str) -> images_pb2.Image:
        result: images_pb2.Image = self._images.GetImage(
            images_pb2.GetImageRequest(id=image_id),
            timeout=self._timeouts.call,
            metadata=_with_id(request_id),
        )
        return result


class ImageIndexClient:
    """The image documents the worker writes to vector_service (collection IMAGES). Calls
    without a deadline of their own get `timeouts.call`."""

    def __init__(self, address: str, token: str, timeouts: Timeouts) -> None:
        self._channel = open_channel(
            address, token, timeout=timeouts.call, retry=_VECTOR_RETRY, options=_OPTIONS
        )
        self._stub = vector_pb2_grpc.VectorServiceStub(self._channel)
        self._timeouts = timeouts

    def close(self) -> None:
        self._channel.close()

    def index_image(
        self, job: images_pb2.ImageJob, text: str, request_id: str
    ) -> vector_pb2.UpsertDocumentsResponse:
        """Upserts the image's document: id and source id are the image id, so a retry or
        a later attempt replaces it instead of adding another."""
        document = vector_pb2.Document(
            id=job.image_id,
            scope=vector_pb2.Scope(
                team_id=job.team_id, site_id=job.site_id, environment_id=job.environment_id
            ),
            source_id=job.image_id,
            text=text,
        )
        result: vector_pb2.UpsertDocumentsResponse = self._stub.UpsertDocuments(
            vector_pb2.UpsertDocumentsRequest(
                collection=vector_pb2.COLLECTION_IMAGES, documents=[document]
            ),
            timeout=self._timeouts.vector,
            metadata=_with_id(request_id),
        )
        return result

    def forget_image(self, job: images_pb2.ImageJob, request_id: str) -> None:
        self._stub.DeleteDocuments(
            vector_pb2.DeleteDocumentsRequest(
                collection=vector_pb2.COLLECTION_IMAGES,
                scope=vector_pb2.Scope(
                    team_id=job.team_id, site_id=job.site_id, environment_id=job.environment_id
                ),
                source_id=job.image_id,
            ),
            timeout=self._timeouts.call,
            metadata=_with_id(request_id),
        )

"""The worker's gRPC clients for content_service and vector_service.

Every call carries the service token and a deadline. The channels retry UNAVAILABLE (the call
never reached a server, or the server is restarting) a few times with backoff through gRPC's
service config, for every method but ClaimImageJob: a claim that reached the server but lost
its answer would hold a lease nobody works on, so the claim loop backs off itself instead.
CompleteImageJob and FailImageJob are retried too; when a retry answers LEASE_LOST, the first
try may have succeeded, which the worker checks with GetImage (docs/images.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import grpc
from google.protobuf import duration_pb2, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from loom.content.v1 import images_pb2, images_pb2_grpc
from loom.vector.v1 import vector_pb2, vector_pb2_grpc

__all__ = [
    "CHUNK_BYTES",
    "ContentClient",
    "DownloadError",
    "Timeouts",
    "VectorClient",
    "error_reason",
    "is_lease_lost",
]

# content_service refuses stream messages over 1 MiB.
CHUNK_BYTES: Final = 1024 * 1024

_RETRY_POLICY: Final = {
    "maxAttempts": 4,
    "initialBackoff": "0.2s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def _service_config(methods: Sequence[tuple[str, str]]) -> str:
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": service, "method": method} for service, method in methods],
                    "retryPolicy": _RETRY_POLICY,
                }
            ]
        }
    )


_CONTENT_RETRIED: Final = [
    ("loom.content.v1.ImageJobService", "ExtendImageLease"),
    ("loom.content.v1.ImageJobService", "UploadImageVariant"),
    ("loom.content.v1.ImageJobService", "CompleteImageJob"),
    ("loom.content.v1.ImageJobService", "FailImageJob"),
    ("loom.content.v1.ImageService", "DownloadImage"),
    ("loom.content.v1.ImageService", "GetImage"),
]
_VECTOR_RETRIED: Final = [
    ("loom.vector.v1.VectorService", "UpsertDocuments"),
    ("loom.vector.v1.VectorService", "DeleteDocuments"),
]


def _channel(address: str, methods: Sequence[tuple[str, str]]) -> grpc.Channel:
    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _service_config(methods)),
            # A client stream is retried only while everything sent so far is still buffered:
            # room for a whole large variant, so its upload can be retried too.
            ("grpc.per_rpc_retry_buffer_size", 16 * 1024 * 1024),
            ("grpc.retry_buffer_size", 64 * 1024 * 1024),
            # Find a restarted service within seconds: gRPC's default reconnect backoff grows
            # to two minutes while a service is down, and jobs wait on it.
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ],
    )


def _call_metadata(token: str, request_id: str | None) -> tuple[tuple[str, str], ...]:
    auth = ("authorization", f"Bearer {token}")
    # The services log the caller's x-request-id: one id follows a job across all of them.
    return (auth, ("x-request-id", request_id)) if request_id else (auth,)


def error_reason(exc: grpc.RpcError) -> str | None:
    """The google.rpc.ErrorInfo reason of a failed call, if the server sent one."""
    try:
        # The error a call raises is that call: it has code() and trailing_metadata().
        status = rpc_status.from_call(cast(grpc.Call, exc))
    except (AttributeError, ValueError):  # not a call, or a status at odds with its code
        return None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return None


def is_lease_lost(exc: grpc.RpcError) -> bool:
    return exc.code() == grpc.StatusCode.FAILED_PRECONDITION and error_reason(exc) == "LEASE_LOST"


@dataclass(frozen=True)
class Timeouts:
    call: float = 10.0
    transfer: float = 120.0
    vector: float = 30.0


class DownloadError(Exception):
    """The original arrived but is not what the job describes (size or sha256)."""


class ContentClient:
    def __init__(self, address: str, token: str, timeouts: Timeouts) -> None:
        self._channel = _channel(address, _CONTENT_RETRIED)
        self._jobs = images_pb2_grpc.ImageJobServiceStub(self._channel)
        self._images = images_pb2_grpc.ImageServiceStub(self._channel)
        self._token = token
        self._timeouts = timeouts

    def close(self) -> None:
        self._channel.close()

    def _metadata(self, request_id: str | None) -> tuple[tuple[str, str], ...]:
        return _call_metadata(self._token, request_id)

    def claim(self, wait: float, worker: str) -> grpc.CallFuture[images_pb2.ClaimImageJobResponse]:
        """Starts a ClaimImageJob long-poll; the future can be cancelled (shutdown)."""
        seconds = int(wait)
        request = images_pb2.ClaimImageJobRequest(
            wait=duration_pb2.Duration(seconds=seconds, nanos=int((wait - seconds) * 1e9)),
            worker=worker,
        )
        # The server answers "no job" a little before this deadline.
        return self._jobs.ClaimImageJob.future(
            request, timeout=wait + 5.0, metadata=self._metadata(None)
        )

    def extend(self, image_id: str, lease_token: str, request_id: str) -> float:
        """Moves the lease's expiry; returns it (seconds since the epoch, server clock)."""
        response = self._jobs.ExtendImageLease(
            images_pb2.ExtendImageLeaseRequest(image_id=image_id, lease_token=lease_token),
            timeout=self._timeouts.call,
            metadata=self._metadata(request_id),
        )
        stamp = response.lease_expire_time
        return float(stamp.seconds) + stamp.nanos / 1e9

    def download(self, job: images_pb2.ImageJob, max_bytes: int, request_id: str) -> bytes:
        """The original, checked against the job's size and sha256."""
        stream = self._images.DownloadImage(
            images_pb2.DownloadImageRequest(id=job.image_id),
            timeout=self._timeouts.transfer,
            metadata=self._metadata(request_id),
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
            messages(), timeout=self._timeouts.transfer, metadata=self._metadata(request_id)
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
            request, timeout=self._timeouts.call, metadata=self._metadata(request_id)
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
            metadata=self._metadata(request_id),
        )
        return result

    def get_image(self, image_id: str, request_id: str) -> images_pb2.Image:
        result: images_pb2.Image = self._images.GetImage(
            images_pb2.GetImageRequest(id=image_id),
            timeout=self._timeouts.call,
            metadata=self._metadata(request_id),
        )
        return result


class VectorClient:
    def __init__(self, address: str, token: str, timeouts: Timeouts) -> None:
        self._channel = _channel(address, _VECTOR_RETRIED)
        self._stub = vector_pb2_grpc.VectorServiceStub(self._channel)
        self._token = token
        self._timeouts = timeouts

    def close(self) -> None:
        self._channel.close()

    def _with_id(self, request_id: str) -> tuple[tuple[str, str], ...]:
        return _call_metadata(self._token, request_id)

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
            metadata=self._with_id(request_id),
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
            metadata=self._with_id(request_id),
        )

"""ImageJobService: the image job queue for workers (service token only).

ClaimImageJob long-polls: it tries once, then waits on an in-process signal that uploads
and retryable failures raise, looking at the queue again at least every RECHECK_SECONDS
(for uploads through other replicas and for leases running out). It returns with no job
when `wait` is over, and always a little before the caller's deadline."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from itertools import chain

import grpc
from loom.content.v1 import images_pb2, images_pb2_grpc

from content_service.api.convert import struct_field_to_json, ts
from content_service.api.images import image_proto, receive, variant_proto
from content_service.images import leases, records
from content_service.images.media import sniff
from content_service.images.runtime import ImageRuntime
from servicekit.auth import current_principal, require_service
from servicekit.errors import ResourceExhausted, invalid

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 30.0
RECHECK_SECONDS = 1.0
MAX_VARIANT_DIMENSION = 16384


def job_proto(job: leases.ClaimedJob, limits: leases.JobLimits) -> images_pb2.ImageJob:
    image = job.image
    return images_pb2.ImageJob(
        image_id=image.id,
        team_id=job.scope.team_id,
        site_id=job.scope.site_id,
        environment_id=job.scope.environment_id,
        filename=image.filename,
        mime_type=image.mime_type,
        alt_text=image.alt_text,
        size_bytes=image.size,
        sha256=image.hash,
        lease_token=image.lease_token or "",
        lease_expire_time=ts(image.lease_expires_at),
        attempt=image.attempts,
        max_attempts=limits.max_attempts,
        previous_error=image.error or "",
    )


class ImageJobServicer(images_pb2_grpc.ImageJobServiceServicer):
    def __init__(self, runtime: ImageRuntime) -> None:
        self.rt = runtime
        self.db = runtime.db
        self.media = runtime.media
        self._waiters = 0
        self._waiters_lock = threading.Lock()

    # --- claiming ------------------------------------------------------------------------

    def ClaimImageJob(
        self, request: images_pb2.ClaimImageJobRequest, context: grpc.ServicerContext
    ) -> images_pb2.ClaimImageJobResponse:
        require_service(current_principal())
        wait = 0.0
        if request.HasField("wait"):
            wait = request.wait.seconds + request.wait.nanos / 1e9
            if wait < 0:
                raise invalid("wait", "must not be negative")
        start = time.monotonic()
        deadline = start + min(wait, MAX_WAIT_SECONDS)
        rpc_left = context.time_remaining()
        if rpc_left is not None:
            # Answer "no job" a little before the caller's deadline, not DEADLINE_EXCEEDED.
            deadline = min(deadline, start + rpc_left - min(0.5, max(0.05, rpc_left * 0.1)))

        signal = self.rt.signal
        seen = signal.seq
        job = self._try_claim(request.worker)
        if job is not None or time.monotonic() >= deadline:
            return images_pb2.ClaimImageJobResponse(job=job)
        if not self._enter_wait():
            raise ResourceExhausted(
                f"{self.rt.max_waiters} claims are already waiting on this server; retry "
                "after a short backoff (or run fewer claim loops per server)",
                reason="TOO_MANY_WAITING_CLAIMS",
            )
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not context.is_active():
                    return images_pb2.ClaimImageJobResponse()
                signal.wait(seen, min(left, RECHECK_SECONDS))
                seen = signal.seq
                # A caller that gave up while we waited must not be leased a job it never sees.
                if not context.is_active():
                    return images_pb2.ClaimImageJobResponse()
                job = self._try_claim(request.worker)
                if job is not None:
                    return images_pb2.ClaimImageJobResponse(job=job)
        finally:
            self._leave_wait()

    def _try_claim(self, worker: str) -> images_pb2.ImageJob | None:
        # A read first: an empty queue never takes the write lock.
        with self.db.read() as s:
            if not leases.has_candidate(s):
                return None
        with self.db.write() as s:
            job, removed = leases.claim(s, self.rt.limits)
            out = job_proto(job, self.rt.limits) if job is not None else None
        self.media.remove_all(removed)
        if out is not None:
            log.info(
                "image %s claimed by %s (attempt %d/%d)",
                out.image_id,
                worker or "a worker",
                out.attempt,
                out.max_attempts,
            )
        return out

    def _enter_wait(self) -> bool:
        with self._waiters_lock:
            if self._waiters >= self.rt.max_waiters:
                return False
            self._waiters += 1
            return True

    def _leave_wait(self) -> None:
        with self._waiters_lock:
            self._waiters -= 1

    # --- while holding a lease -----------------------------------------------------------

    def ExtendImageLease(
        self, request: images_pb2.ExtendImageLeaseRequest, context: grpc.ServicerContext
    ) -> images_pb2.ExtendImageLeaseResponse:
        require_service(current_principal())
        with self.db.write() as s:
            expires = leases.extend(s, request.image_id, request.lease_token, self.rt.limits)
        return images_pb2.ExtendImageLeaseResponse(lease_expire_time=ts(expires))

    def UploadImageVariant(
        self,
        request_iterator: Iterator[images_pb2.UploadImageVariantRequest],
        context: grpc.ServicerContext,
    ) -> images_pb2.ImageVariant:
        require_service(current_principal())
        first = next(request_iterator, None)
        if first is None:
            raise invalid("image_id", "the stream was empty: send the header first")
        width, fmt = records.variant_key_value(first.width, first.format, "")
        if not 1 <= first.height <= MAX_VARIANT_DIMENSION:
            raise invalid("height", f"must be 1-{MAX_VARIANT_DIMENSION}")
        # Before accepting any byte: is the lease still ours? (The write checks again.)
        with self.db.read() as s:
            leases.leased(s, first.image_id, first.lease_token, lock=False)
        with self.media.temp() as blob:
            receive(
                chain([first], request_iterator),
                blob,
                max_bytes=self.rt.max_upload_bytes,
                header_fields=("image_id", "lease_token", "width", "height", "format"),
            )
            if blob.size == 0:
                raise invalid("chunk", "the file is empty")
            found = sniff(blob.head)
            if found != records.VARIANT_FORMATS[fmt]:
                raise invalid(
                    "chunk", f"the bytes are not a {fmt} file (signature: {found or 'unknown'})"
                )
            blob.finish()
            try:
                with self.db.write() as s:
                    row, replaced = leases.put_variant(
                        s, first.image_id, first.lease_token, width, first.height, fmt, blob
                    )
                    result = variant_proto(row, self.rt.urls)
                    new_key = row.path
            except BaseException:
                if blob.published_key is not None:
                    self.media.remove(blob.published_key)  # a fresh key: nothing refers to it
                raise
        if replaced is not None and replaced != new_key:
            self.media.remove(replaced)
        return result

    def CompleteImageJob(
        self, request: images_pb2.CompleteImageJobRequest, context: grpc.ServicerContext
    ) -> images_pb2.Image:
        require_service(current_principal())
        variants = [
            records.variant_key_value(v.width, v.format, f"variants[{i}]")
            for i, v in enumerate(request.variants)
        ]
        metadata = struct_field_to_json(request, "metadata", "metadata")
        with self.db.write() as s:
            view, stale = leases.complete(
                s,
                request.image_id,
                request.lease_token,
                width=request.width,
                height=request.height,
                metadata=metadata,
                variants=variants,
                generated_alt_text=request.generated_alt_text,
            )
            result = image_proto(view, self.rt.urls)
        self.media.remove_all(stale)
        log.info("image %s completed with %d variant(s)", result.id, len(result.variants))
        return result

    def FailImageJob(
        self, request: images_pb2.FailImageJobRequest, context: grpc.ServicerContext
    ) -> images_pb2.Image:
        require_service(current_principal())
        with self.db.write() as s:
            view, removed, requeued = leases.fail(
                s,
                request.image_id,
                request.lease_token,
                request.reason,
                retryable=request.retryable,
                limits=self.rt.limits,
            )
            result = image_proto(view, self.rt.urls)
        self.media.remove_all(removed)
        if requeued:
            self.rt.signal.notify()
        log.info(
            "image %s attempt %d failed (%s): %s",
            result.id,
            result.attempts,
            "will retry" if requeued else "final",
            result.error,
        )
        return result

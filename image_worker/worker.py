"""The image worker: claims image jobs from content_service and turns each pending upload into
variants, metadata and a search-index entry (docs/worker.md, docs/images.md).

A worker keeps no state of its own; everything lives in content_service and vector_service,
reached over gRPC, so any number of workers can run anywhere.

Threads of one worker:

* one claimer long-polls ClaimImageJob, and only while a job slot is free: a worker never
  holds a lease on a job it is not working on, and it keeps one waiting call (one server
  thread) on content_service whatever its concurrency;
* each claimed job runs in its own thread, beside a lease keeper that extends the lease about
  every third of its length;
* the pixel work runs in the job thread (WORKER_MODE=threads) or in a pool of processes.

One job: download the original (sha256 checked), process it (decode under limits, variants,
metadata), ask the vision model (optional), upload the variants, index the text in
vector_service, complete. The index write comes before CompleteImageJob, always: a completed
image is a searchable one. Every failure ends at one boundary (`_handle`): a bad image fails
for good with the processing library's reason, anything else gives the job back to the queue
as a retryable failure, and losing the lease (or the image) drops the job without a word to
content_service, which already gave it to someone else.

What an operator sees: the loom_worker_* metrics (image_worker.metrics; served on
WORKER_METRICS_PORT when set), and with tracing on one trace per job, its stages as spans and
its calls to both services inside them.

Shutdown (`stop`): stop claiming, let in-flight jobs run for the grace period, then give the
unfinished ones back (FailImageJob retryable, "worker shutting down"). Each job makes exactly
one final call, complete or fail, whichever thread gets there first: a job is never both
completed and released, and never left half-way without either.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Final

import grpc
from loom.content.v1 import images_pb2

from image_worker import metrics, processing
from image_worker.clients import (
    ContentClient,
    DownloadError,
    ImageIndexClient,
    Timeouts,
    is_lease_lost,
)
from image_worker.processing import ImageRejected, Limits, Processed
from image_worker.settings import WorkerSettings
from image_worker.vision import Description, VisionClient, create_vision
from servicekit import tracing
from servicekit.clients import TRANSIENT
from servicekit.image_text import image_text
from servicekit.logs import request_id_var
from servicekit.metrics import MetricsServer, serve_metrics

__all__ = ["SHUTDOWN_REASON", "Worker", "WorkerStats", "index_text"]

log = logging.getLogger(__name__)

SHUTDOWN_REASON: Final = "worker shutting down"
# After ClaimImageJob fails (RESOURCE_EXHAUSTED: too many claims wait on that server;
# UNAVAILABLE; anything else), wait this long, jittered, before the next claim.
CLAIM_BACKOFF_SECONDS: Final = (1.0, 5.0)
# content_service's limit for a failure reason.
_MAX_REASON: Final = 2000
# Never extend more often than this, whatever a (mis-measured) lease length suggests.
_MIN_EXTEND_INTERVAL: Final = 0.2
# Index errors worth waiting out, holding the lease: the transient ones
# (servicekit.clients.TRANSIENT), and FAILED_PRECONDITION, which vector_service answers for a
# model mismatch while a reindex runs (it heals when the reindex ends). Others (a refused
# token, a bad request) will not heal by themselves within a lease, so the job goes back to
# the queue at once.
_INDEX_RETRIED: Final = TRANSIENT | {grpc.StatusCode.FAILED_PRECONDITION}
_LEASE_LOST: Final = "the lease was lost (it expired and another worker claimed the image)"
# Backoff jitter, not a secret.
_jitter = random.SystemRandom()


class _JobGone(Exception):
    """The lease was lost or the image deleted: someone else owns the outcome now."""


class _Retryable(Exception):
    """A fault that another attempt may not meet; the message is the reason people read."""


class _Abandoned(Exception):
    """The worker is stopping and the grace period is over."""


@dataclass(frozen=True)
class WorkerStats:
    claimed: int = 0
    completed: int = 0
    # Bad images: FailImageJob with retryable=false.
    failed: int = 0
    # Transient faults: FailImageJob with retryable=true.
    retried: int = 0
    # Given back at shutdown.
    released: int = 0
    # Lease lost or image deleted: nothing reported.
    dropped: int = 0


def _describe(exc: grpc.RpcError) -> str:
    details = " ".join(str(exc.details() or "").split())
    return f"{exc.code().name}: {details[:300]}" if details else exc.code().name


def _dimension(metadata: dict[str, object], key: str) -> int:
    value = metadata[key]
    if not isinstance(value, int):
        raise TypeError(f"metadata[{key!r}] is {value!r}, not an int")
    return value


def index_text(job: images_pb2.ImageJob, alt_text: str, described: Description | None) -> str:
    """The document vector_service indexes (servicekit.image_text, the one rule)."""
    if described is None:
        return image_text(job.image_id, job.filename, alt_text)
    return image_text(job.image_id, job.filename, alt_text, described.caption, described.tags)


@contextmanager
def _stage(stage: str) -> Iterator[None]:
    """Times a stage of a job (loom_worker_stage_seconds, also when it fails) and makes it a
    span with tracing on."""
    started = time.perf_counter()
    try:
        with tracing.span(stage):
            yield
    finally:
        metrics.STAGE_SECONDS.labels(stage, "").observe(time.perf_counter() - started)


def _observe_processing(processed: Processed) -> None:
    """The processing library's own timings (measured where it runs, a pool process too)."""
    for stage, seconds in processed.stage_seconds.items():
        metrics.STAGE_SECONDS.labels(stage, "").observe(seconds)
    encoding: dict[str, float] = {}
    for variant in processed.variants:
        encoding[variant.format] = encoding.get(variant.format, 0.0) + variant.encode_seconds
    for fmt, seconds in encoding.items():
        metrics.STAGE_SECONDS.labels("encode", fmt).observe(seconds)


class _Processor:
    """Processes in the calling thread: Pillow releases the GIL while it decodes, resizes and
    encodes, which is nearly all of the work."""

    def __init__(self, limits: Limits, widths: Sequence[int], formats: Sequence[str]) -> None:
        self.limits = limits
        self.widths = tuple(widths)
        self.formats = tuple(formats)

    def __call__(self, data: bytes) -> Processed:
        return processing.process(data, self.limits, self.widths, self.formats)

    def close(self) -> None:
        pass


class _PoolProcessor(_Processor):
    """Processes in a pool of processes. A decoder that crashes its process (a native bug
    reached by a hostile file) costs that process, not the worker."""

    def __init__(
        self,
        limits: Limits,
        widths: Sequence[int],
        formats: Sequence[str],
        workers: int,
        target: Callable[[bytes, Limits, Sequence[int], Sequence[str]], Processed] = (
            processing.process
        ),
    ) -> None:
        super().__init__(limits, widths, formats)
        self._workers = workers
        self._target = target
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: forking a process that runs gRPC threads can deadlock the child.
        return ProcessPoolExecutor(self._workers, mp_context=multiprocessing.get_context("spawn"))

    def __call__(self, data: bytes) -> Processed:
        with self._lock:
            pool = self._pool
        try:
            return pool.submit(self._target, data, self.limits, self.widths, self.formats).result()
        except BrokenProcessPool as exc:
            with self._lock:
                if self._pool is pool:
                    self._pool = self._new_pool()
            pool.shutdown(wait=False)
            raise _Retryable(
                "the image processor crashed (on this image, or on another one processed at "
                "the same time)"
            ) from exc

    def close(self) -> None:
        with self._lock:
            self._pool.shutdown(wait=False, cancel_futures=True)


class _Job:
    """One claimed job and what the threads that touch it share."""

    def __init__(self, job: images_pb2.ImageJob) -> None:
        self.job = job
        self.request_id = f"img-{job.image_id}-{job.attempt}"
        self.started = time.monotonic()
        expires = job.lease_expire_time.seconds + job.lease_expire_time.nanos / 1e9
        # Measured against our clock: keep the clocks of workers and servers in sync (NTP).
        self.lease_seconds = max(1.0, expires - time.time())
        # Whoever makes the final call (complete or fail) holds this and sets `ended`.
        self.lock = threading.Lock()
        self.ended = False
        self.lost = threading.Event()
        self.abandoned = threading.Event()
        self.done = threading.Event()
        # Set with `lost` and `abandoned`: cuts a backoff sleep short.
        self.wake = threading.Event()

    def checkpoint(self) -> None:
        if self.lost.is_set():
            raise _JobGone(_LEASE_LOST)
        if self.abandoned.is_set():
            raise _Abandoned

    def sleep(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.checkpoint()


class Worker:
    """Claims and processes image jobs until `stop`. Thread-safe; `start` once."""

    def __init__(self, settings: WorkerSettings, *, token: str | None = None) -> None:
        self.settings = settings
        self.name = settings.worker_name
        token = token or settings.token()
        timeouts = Timeouts(
            call=settings.call_timeout_seconds,
            transfer=settings.transfer_timeout_seconds,
            vector=settings.vector_timeout_seconds,
        )
        self._content = ContentClient(settings.content_address, token, timeouts)
        self._vector = ImageIndexClient(settings.vector_address, token, timeouts)
        limits = Limits(
            max_bytes=settings.max_bytes,
            max_pixels=settings.max_pixels,
            time_budget_s=settings.time_budget_seconds,
        )
        self._process: _Processor
        if settings.mode == "processes":
            self._process = _PoolProcessor(
                limits, settings.widths, settings.formats, settings.concurrency
            )
        else:
            self._process = _Processor(limits, settings.widths, settings.formats)
        self._vision: VisionClient | None = create_vision(settings)
        self._slots = threading.Semaphore(settings.concurrency)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._active: dict[str, _Job] = {}
        self._claim_call: grpc.CallFuture[images_pb2.ClaimImageJobResponse] | None = None
        self._claimer: threading.Thread | None = None
        self._claim_errors = 0
        self._stats = WorkerStats()
        self._stopped = False
        self._hurried = False
        self._deadline = 0.0
        self._metrics: MetricsServer | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Starts claiming, and serves metrics when WORKER_METRICS_PORT is set (raises
        servicekit.metrics.MetricsPortInUse when that port is taken)."""
        if self._claimer is not None:
            raise RuntimeError("the worker was started already")
        port = self.settings.metrics_port
        if port is not None:
            self._metrics = serve_metrics(self.settings.metrics_host, port)
            log.info(
                "image worker %s serves Prometheus metrics at %s", self.name, self._metrics.url
            )
        self._claimer = threading.Thread(
            target=self._claim_loop, name=f"claimer-{self.name}", daemon=True
        )
        self._claimer.start()
        log.info(
            "image worker %s: %d job(s) at once in %s, widths %s, formats %s, vision %s",
            self.name,
            self.settings.concurrency,
            self.settings.mode,
            ",".join(map(str, self.settings.widths)),
            ",".join(self.settings.formats),
            self._vision.model if self._vision else "off",
        )

    @property
    def metrics_port(self) -> int | None:
        """The port of the Prometheus endpoint (None: no metrics served)."""
        return self._metrics.port if self._metrics is not None else None

    @property
    def alive(self) -> bool:
        """Claiming: started, not stopping, and the claim loop is running."""
        claimer = self._claimer
        return claimer is not None and claimer.is_alive() and not self._stopping.is_set()

    @property
    def stats(self) -> WorkerStats:
        with self._lock:
            return self._stats

    def stop(self, grace: float | None = None) -> None:
        """Stops claiming, gives in-flight jobs `grace` seconds (default: the setting) to
        finish, then gives the rest back to the queue. Returns once every job has ended or
        been given back."""
        grace = self.settings.grace_seconds if grace is None else grace
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stopping.set()
            if not self._hurried:
                self._deadline = time.monotonic() + grace
            call = self._claim_call
        if call is not None:
            call.cancel()  # type: ignore[no-untyped-call]
        if self._claimer is not None:
            self._claimer.join()
        with self._changed:
            if self._active:
                log.info("waiting up to %.1f s for %d job(s)", grace, len(self._active))
            while self._active and (left := self._deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            unfinished = list(self._active.values())
        for active in unfinished:
            active.abandoned.set()
            active.wake.set()
            self._fail(active, SHUTDOWN_REASON, retryable=True, released=True)
        # Their threads stop at the next step without another call. One still inside a
        # long Pillow call is not waited for: its job was given back already.
        with self._changed:
            self._changed.wait_for(lambda: not self._active, timeout=2.0)
            leftover = len(self._active)
        self._process.close()
        if self._vision is not None:
            self._vision.close()
        if not leftover:
            self._content.close()
            self._vector.close()
        if self._metrics is not None:
            self._metrics.stop()
        stats = self.stats
        log.info(
            "image worker %s stopped: %d claimed, %d completed, %d failed, %d retried, "
            "%d given back, %d dropped",
            self.name,
            stats.claimed,
            stats.completed,
            stats.failed,
            stats.retried,
            stats.released,
            stats.dropped,
        )

    def hurry(self) -> None:
        """Ends the grace period now: unfinished jobs are given back (a second SIGTERM)."""
        with self._changed:
            self._hurried = True
            self._deadline = time.monotonic()
            self._changed.notify_all()

    def _count(self, **deltas: int) -> None:
        """Counts how jobs ended (WorkerStats' fields but `claimed`), here and in metrics."""
        for outcome, delta in deltas.items():
            metrics.JOBS_ENDED.labels(outcome).inc(delta)
        with self._lock:
            self._stats = replace(
                self._stats, **{k: getattr(self._stats, k) + v for k, v in deltas.items()}
            )

    # --- claiming -----------------------------------------------------------------------

    def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue
            started = False
            try:
                job = self._claim()
                if job is not None:
                    self._start_job(job)
                    started = True
            except Exception:  # the claim loop must outlive any surprise
                # A job claimed but not started returns to the queue when its lease runs out.
                log.exception("claim loop error; backing off")
                self._stopping.wait(_jitter.uniform(*CLAIM_BACKOFF_SECONDS))
            if not started:
                self._slots.release()

    def _claim(self) -> images_pb2.ImageJob | None:
        future = self._content.claim(self.settings.claim_wait_seconds, self.name)
        with self._lock:
            self._claim_call = future
        # stop() may have looked for the call just before it was registered.
        if self._stopping.is_set():
            future.cancel()  # type: ignore[no-untyped-call]
        try:
            response: images_pb2.ClaimImageJobResponse = future.result()
        except grpc.FutureCancelledError:
            return None
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and self._stopping.is_set():
                return None
            self._claim_failed(exc)
            return None
        finally:
            with self._lock:
                self._claim_call = None
        if self._claim_errors:
            log.info("claiming works again after %d failed claim(s)", self._claim_errors)
            self._claim_errors = 0
        return response.job if response.HasField("job") else None

    def _claim_failed(self, exc: grpc.RpcError) -> None:
        self._claim_errors += 1
        delay = _jitter.uniform(*CLAIM_BACKOFF_SECONDS)
        code = exc.code()
        metrics.CLAIM_ERRORS.labels(code.name).inc()
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            log.error(
                "content_service refuses the service token (%s): LOOM_SERVICE_TOKEN must "
                "match the services'; retrying in %.1f s",
                code.name,
                delay,
            )
        else:
            # The first of a streak is news; the rest (a server restarting) are noise.
            level = logging.WARNING if self._claim_errors == 1 else logging.DEBUG
            log.log(level, "claiming failed (%s); retrying in %.1f s", _describe(exc), delay)
        self._stopping.wait(delay)

    def _start_job(self, job: images_pb2.ImageJob) -> None:
        active = _Job(job)
        with self._lock:
            # By lease, not image: after a lapsed lease this worker may claim the image again
            # while its first job for it is still winding down.
            self._active[job.lease_token] = active
            self._stats = replace(self._stats, claimed=self._stats.claimed + 1)
        metrics.JOBS_CLAIMED.inc()
        # Daemon: a stopped worker's process must be able to exit while a released job's
        # thread is still inside a Pillow call that cannot be interrupted.
        thread = threading.Thread(
            target=self._run, args=(active,), name=f"job-{job.image_id}", daemon=True
        )
        try:
            thread.start()
        except BaseException:
            with self._lock:
                del self._active[job.lease_token]
            raise

    # --- one job ------------------------------------------------------------------------

    def _run(self, active: _Job) -> None:
        rid = request_id_var.set(active.request_id)
        metrics.JOBS_IN_PROGRESS.inc()
        job = active.job
        span = tracing.span(
            "image job",
            {
                "loom.image_id": job.image_id,
                "loom.attempt": job.attempt,
                tracing.REQUEST_ID_ATTRIBUTE: active.request_id,
            },
        )
        try:
            with span:
                keeper = threading.Thread(
                    target=self._keep_lease,
                    args=(active, tracing.current_context()),
                    name=f"lease-{job.image_id}",
                    daemon=True,
                )
                keeper.start()
                self._handle(active)
        finally:
            metrics.JOBS_IN_PROGRESS.dec()
            active.done.set()
            active.wake.set()
            with self._changed:
                del self._active[active.job.lease_token]
                self._changed.notify_all()
            self._slots.release()
            request_id_var.reset(rid)

    def _handle(self, active: _Job) -> None:
        """The one boundary: whatever happens to a job ends here, logged with its image id."""
        image_id = active.job.image_id
        try:
            self._pipeline(active)
        except _JobGone as exc:
            log.info("image %s: %s; dropping the job", image_id, exc)
            self._count(dropped=1)
        except ImageRejected as exc:
            self._fail(active, exc.reason, retryable=False)
        except _Abandoned:
            self._fail(active, SHUTDOWN_REASON, retryable=True, released=True)
        except _Retryable as exc:
            self._fail(active, str(exc), retryable=True)
        except Exception as exc:  # no input may take the worker down
            log.exception("image %s: unexpected error", image_id)
            self._fail(
                active,
                f"the image worker hit an unexpected error ({type(exc).__name__}); will retry",
                retryable=True,
            )

    def _pipeline(self, active: _Job) -> None:
        job = active.job
        with _stage("download"):
            data = self._download(active)
        metrics.DOWNLOADED_BYTES.inc(len(data))
        active.checkpoint()
        with tracing.span("process"):
            processed = self._process(data)
        _observe_processing(processed)
        del data
        active.checkpoint()
        described: Description | None = None
        if self._vision is not None:
            with _stage("vision"):
                described = self._vision.describe(processed.variants, filename=job.filename)
            active.checkpoint()
        with _stage("upload"):
            for variant in processed.variants:
                with self._rpc("uploading a variant"):
                    self._content.upload_variant(
                        job,
                        variant.width,
                        variant.height,
                        variant.format,
                        variant.data,
                        active.request_id,
                    )
                metrics.UPLOADED_BYTES.labels(variant.format).inc(len(variant.data))
                active.checkpoint()
        metadata = dict(processed.metadata)
        generated_alt = ""
        if described is not None:
            generated_alt = described.alt_text
            if described.caption:
                metadata["caption"] = described.caption
            if described.tags:
                metadata["tags"] = list(described.tags)
        with _stage("index"):
            self._index(active, index_text(job, job.alt_text or generated_alt, described))
        active.checkpoint()
        with _stage("complete"):
            self._complete(active, processed, metadata, generated_alt)

    @contextmanager
    def _rpc(self, what: str) -> Iterator[None]:
        try:
            yield
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise _JobGone("the image was deleted") from None
            if is_lease_lost(exc):
                raise _JobGone(_LEASE_LOST) from None
            raise _Retryable(f"{what} failed: {_describe(exc)}") from exc

    def _download(self, active: _Job) -> bytes:
        job = active.job
        limit = self.settings.max_bytes
        processing.check_byte_size(job.size_bytes, limit)
        with self._rpc("downloading the original"):
            try:
                return self._content.download(job, limit, active.request_id)
            except DownloadError as exc:
                raise _Retryable(f"downloading the original failed: {exc}") from exc

    def _index(self, active: _Job, text: str) -> None:
        """Writes the image's document, retrying transient faults with backoff while the
        lease keeper holds the lease, for at most WORKER_INDEX_RETRY_SECONDS."""
        give_up = time.monotonic() + self.settings.index_retry_seconds
        delay = self.settings.retry_backoff_seconds
        failures = 0
        while True:
            try:
                self._vector.index_image(active.job, text, active.request_id)
            except grpc.RpcError as exc:
                failures += 1
                problem = _describe(exc)
                pause = _jitter.uniform(delay / 2, delay)
                if exc.code() not in _INDEX_RETRIED or time.monotonic() + pause > give_up:
                    tries = f"{failures} {'try' if failures == 1 else 'tries'}"
                    raise _Retryable(
                        f"could not index the image text in vector_service ({tries}): {problem}"
                    ) from exc
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "image %s: indexing failed (%s); retrying in %.1f s",
                    active.job.image_id,
                    problem,
                    pause,
                )
                active.sleep(pause)
                delay = min(delay * 2, self.settings.retry_backoff_max_seconds)
                continue
            if failures:
                log.info("image %s: indexed after %d failed tries", active.job.image_id, failures)
            return

    def _complete(
        self,
        active: _Job,
        processed: Processed,
        metadata: dict[str, object],
        generated_alt: str,
    ) -> None:
        job = active.job
        with active.lock:
            if active.ended:
                return
            active.ended = True
            try:
                image = self._content.complete(
                    job,
                    width=_dimension(processed.metadata, "width"),
                    height=_dimension(processed.metadata, "height"),
                    metadata=metadata,
                    variants=[(v.width, v.format) for v in processed.variants],
                    generated_alt_text=generated_alt,
                    request_id=active.request_id,
                )
            except grpc.RpcError as exc:
                if is_lease_lost(exc):
                    self._after_lease_lost(active, "CompleteImageJob")
                    return
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    log.info("image %s was deleted before it completed", job.image_id)
                    self._forget(active)
                    self._count(dropped=1)
                    return
                reason = f"completing the job failed: {_describe(exc)}"
                self._send_fail(active, reason, retryable=True, released=False)
                return
        self._count(completed=1)
        log.info(
            "image %s completed: %dx%d, %d variant(s) in %.2f s (attempt %d)",
            job.image_id,
            image.width,
            image.height,
            len(image.variants),
            time.monotonic() - active.started,
            job.attempt,
        )

    def _fail(self, active: _Job, reason: str, *, retryable: bool, released: bool = False) -> None:
        with active.lock:
            if active.ended:
                return
            active.ended = True
            self._send_fail(active, reason, retryable=retryable, released=released)

    def _send_fail(self, active: _Job, reason: str, *, retryable: bool, released: bool) -> None:
        """FailImageJob, never raising: when it cannot be delivered, the lease runs out and
        the job returns to the queue anyway."""
        job = active.job
        try:
            image = self._content.fail(
                job, reason[:_MAX_REASON], retryable=retryable, request_id=active.request_id
            )
        except grpc.RpcError as exc:
            if is_lease_lost(exc):
                self._after_lease_lost(active, "FailImageJob")
                return
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                log.info("image %s was deleted", job.image_id)
                self._count(dropped=1)
                return
            log.warning(
                "image %s: could not report %r (%s); its lease runs out and it returns to "
                "the queue",
                job.image_id,
                reason,
                _describe(exc),
            )
            self._count(dropped=1)
            return
        except Exception:  # e.g. a channel closed under a job at shutdown
            log.exception("image %s: could not report %r", job.image_id, reason)
            self._count(dropped=1)
            return
        final = image.state == images_pb2.Image.STATE_FAILED
        if released:
            self._count(released=1)
        elif final:
            self._count(failed=1)
        else:
            self._count(retried=1)
        log.log(
            logging.INFO if released or not retryable else logging.WARNING,
            "image %s %s (attempt %d/%d): %s",
            job.image_id,
            "failed" if final else "given back to the queue",
            job.attempt,
            job.max_attempts,
            reason,
        )

    def _after_lease_lost(self, active: _Job, call: str) -> None:
        """A final call answered LEASE_LOST: another worker has the job, or a first try of
        this very call (retried after UNAVAILABLE) went through. GetImage tells which
        state the image is in; either way there is nothing left to do."""
        job = active.job
        try:
            state = images_pb2.Image.State.Name(
                self._content.get_image(job.image_id, active.request_id).state
            )
        except grpc.RpcError as exc:
            state = f"unknown ({_describe(exc)})"
        log.info(
            "image %s: %s answered LEASE_LOST; the image is %s (another worker's, or an "
            "earlier try of this call went through)",
            job.image_id,
            call,
            state,
        )
        self._count(dropped=1)

    def _forget(self, active: _Job) -> None:
        # The image is gone: its document would only make searches find a dead id.
        try:
            self._vector.forget_image(active.job, active.request_id)
        except grpc.RpcError as exc:
            log.warning(
                "image %s: could not remove its document from the index (%s)",
                active.job.image_id,
                _describe(exc),
            )

    # --- the lease ----------------------------------------------------------------------

    def _keep_lease(self, active: _Job, trace: object | None = None) -> None:
        request_id_var.set(active.request_id)
        with tracing.attached(trace):  # its extends belong to the job's trace
            self._extend_until_done(active)

    def _extend_until_done(self, active: _Job) -> None:
        job = active.job
        interval = active.lease_seconds / 3
        while not active.done.wait(max(_MIN_EXTEND_INTERVAL, interval)):
            asked = time.time()
            try:
                expires = self._content.extend(job.image_id, job.lease_token, active.request_id)
            except grpc.RpcError as exc:
                if active.ended:
                    return
                if is_lease_lost(exc) or exc.code() == grpc.StatusCode.NOT_FOUND:
                    log.info("image %s: lease lost (%s)", job.image_id, _describe(exc))
                    active.lost.set()
                    active.wake.set()
                    return
                # An expired lease stays valid until someone claims the image: keep trying.
                log.warning(
                    "image %s: could not extend the lease (%s)", job.image_id, _describe(exc)
                )
                interval = active.lease_seconds / 6
                continue
            except Exception:  # e.g. the channel closed at shutdown
                if not active.ended:
                    log.exception("image %s: lease keeper stopped", job.image_id)
                return
            active.lease_seconds = max(1.0, expires - asked)
            interval = active.lease_seconds / 3

"""Image jobs: leases on images, fenced by a token.

A worker claims the oldest pending image (or a processing one whose lease expired): it
becomes processing, attempts grows by one, and the worker gets a random lease token and an
expiry. Every later call presents the token and runs in one write transaction that first
locks the image row and compares the token, so a worker whose lease was taken over changes
nothing (LEASE_LOST). An expired lease stays valid until someone claims the image again.

Claims run in a write transaction: BEGIN IMMEDIATE on SQLite (one writer at a time), and
SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL, so concurrent claimers never get the same
image and never wait on each other's rows.

Variants uploaded under a lease carry the lease's tag (a hash of the token) in their media
key; CompleteImageJob accepts only variants with the current tag, so a variant uploaded by
a worker that lost its lease can never end up in the completed image.

Expiry times are whole seconds (the schema's timestamps): a lease of L seconds expires at
ceil(now + L), so it lasts at least L seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from content_service import scope
from content_service.db.models import Image, ImageVariant
from content_service.db.values import dumps, now
from content_service.images import records
from content_service.images.media import MediaStore, TempBlob
from content_service.images.records import ImageView
from content_service.metrics import IMAGE_LEASE_EXPIRIES
from content_service.scope import EnvScope
from servicekit.errors import FailedPrecondition, NotFound, invalid, shown
from servicekit.ids import new_id

log = logging.getLogger(__name__)

MAX_REASON = 2000
MAX_METADATA_BYTES = 64 * 1024
MAX_DIMENSION = 1 << 16
# A claim looks at this many expired, exhausted images (failing them) before giving up.
_MAX_EXHAUSTED_PER_CLAIM = 32


@dataclass(frozen=True)
class JobLimits:
    lease_seconds: int
    max_attempts: int


@dataclass
class ClaimedJob:
    image: Image
    scope: EnvScope


def lease_tag(token: str) -> str:
    """A short, one-way tag of a lease token, written into the keys of its variants."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def expiry(lease_seconds: int) -> int:
    return math.ceil(time.time() + lease_seconds)


def _claimable(now_s: int) -> Any:
    return or_(
        Image.state == "pending",
        and_(Image.state == "processing", Image.lease_expires_at <= now_s),
    )


def has_candidate(session: Session) -> bool:
    """A cheap read before taking the write lock: is there anything to claim?"""
    return session.scalars(select(Image.id).where(_claimable(now())).limit(1)).first() is not None


def claim(session: Session, limits: JobLimits) -> tuple[ClaimedJob | None, list[str]]:
    """Claims one image (None when nothing is claimable). Also returns the variant files
    of images that ran out of attempts on the way (to remove after the commit)."""
    removed: list[str] = []
    for _ in range(_MAX_EXHAUSTED_PER_CLAIM):
        image = session.scalars(
            select(Image)
            .where(_claimable(now()))
            .order_by(Image.id)
            .limit(1)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite ignores it
        ).first()
        if image is None:
            return None, removed
        if image.state == "processing":
            IMAGE_LEASE_EXPIRIES.inc()  # claimable while processing: its lease ran out
        if image.state == "processing" and image.attempts >= limits.max_attempts:
            # Its last allowed attempt ran out of time: it ends here.
            reason = f"gave up after {image.attempts} attempts: the last lease expired"
            if image.error:
                reason += f" (the error before: {image.error})"
            removed += _end_failed(session, image, reason)
            log.warning("image %s failed: %s", image.id, reason)
            continue
        image.state = "processing"
        image.attempts += 1
        image.lease_token = secrets.token_urlsafe(24)
        image.lease_expires_at = expiry(limits.lease_seconds)
        image.updated_at = now()
        return ClaimedJob(image, _scope_of(session, image.environment_id)), removed
    return None, removed


def _scope_of(session: Session, environment_id: str) -> EnvScope:
    found = scope.lookup(session, environment_id)
    assert found is not None  # records.environment_id is a foreign key
    return found


def leased(session: Session, image_id: str, token: str, *, lock: bool = True) -> Image:
    """The image, locked (FOR UPDATE on PostgreSQL), if `token` is its current lease;
    LEASE_LOST otherwise."""
    scope.require_id(image_id, "image_id")
    if not token:
        raise invalid("lease_token", "is required (from ClaimImageJob)")
    stmt = select(Image).where(Image.id == image_id)
    image = session.scalars(stmt.with_for_update() if lock else stmt).first()
    if image is None:
        raise NotFound("image", image_id)
    if (
        image.state != "processing"
        or image.lease_token is None
        or not hmac.compare_digest(image.lease_token.encode(), token.encode())
    ):
        raise FailedPrecondition(
            f"the lease on image {shown(image_id)} is not held by this token any more (it expired "
            "and the image was claimed again, or the job already ended)",
            reason="LEASE_LOST",
        )
    return image


def extend(session: Session, image_id: str, token: str, limits: JobLimits) -> int:
    image = leased(session, image_id, token)
    image.lease_expires_at = expiry(limits.lease_seconds)
    return image.lease_expires_at


def put_variant(
    session: Session,
    image_id: str,
    token: str,
    width: int,
    height: int,
    fmt: str,
    blob: TempBlob,
) -> tuple[ImageVariant, str | None]:
    """Records an uploaded variant (replacing one with the same width and format) and
    publishes its blob. Returns the variant and the key of the file it replaced."""
    image = leased(session, image_id, token)
    key = MediaStore.variant_key(image.id, width, fmt, lease_tag(token))
    # The image row is locked (or the database is, on SQLite): nobody else writes its
    # variants now, so this read-then-write cannot race.
    row = session.scalars(
        select(ImageVariant).where(
            ImageVariant.image_id == image.id,
            ImageVariant.width == width,
            ImageVariant.format == fmt,
        )
    ).first()
    replaced = None
    if row is None:
        row = ImageVariant(
            id=new_id(),
            image_id=image.id,
            width=width,
            height=height,
            format=fmt,
            path=key,
            size=blob.size,
            created_at=now(),
            hash=blob.sha256,
        )
        session.add(row)
    else:
        replaced = row.path
        row.height = height
        row.path = key
        row.size = blob.size
        row.created_at = now()
        row.hash = blob.sha256
    session.flush()
    blob.publish(key)
    return row, replaced


def complete(
    session: Session,
    image_id: str,
    token: str,
    *,
    width: int,
    height: int,
    metadata: dict[str, Any],
    variants: list[tuple[int, str]],
    generated_alt_text: str,
) -> tuple[ImageView, list[str]]:
    """Completes a job. Returns the image and the keys of variant files to remove (those
    not listed, left by earlier attempts)."""
    for name, value in (("width", width), ("height", height)):
        if not 1 <= value <= MAX_DIMENSION:
            raise invalid(name, f"must be 1-{MAX_DIMENSION}")
    if len(json.dumps(metadata).encode()) > MAX_METADATA_BYTES:
        raise invalid("metadata", f"at most {MAX_METADATA_BYTES // 1024} KiB as JSON")
    if len(set(variants)) != len(variants):
        raise invalid("variants", "lists a variant twice")
    alt = records.alt_text_value(generated_alt_text, "generated_alt_text")
    image = leased(session, image_id, token)
    tag = lease_tag(token)
    existing = {
        (v.width, v.format): v
        for v in session.scalars(select(ImageVariant).where(ImageVariant.image_id == image.id))
    }
    for i, wanted in enumerate(variants):
        found = existing.get(wanted)
        if found is None or MediaStore.lease_tag_of_variant(found.path) != tag:
            raise FailedPrecondition(
                f"variants[{i}] ({wanted[0]}w {wanted[1]}) was not uploaded under this lease; "
                "upload it with UploadImageVariant first",
                reason="VARIANT_NOT_UPLOADED",
            )
    stale = [v for key, v in existing.items() if key not in set(variants)]
    if stale:
        session.execute(delete(ImageVariant).where(ImageVariant.id.in_([v.id for v in stale])))
    image.state = "completed"
    image.width = width
    image.height = height
    image.metadata_json = dumps(metadata)
    if alt and not image.alt_text:
        image.alt_text = alt
    image.error = None
    image.lease_token = None
    image.lease_expires_at = None
    image.updated_at = now()
    kept = sorted((existing[k] for k in set(variants)), key=lambda v: (v.format, v.width))
    return ImageView(image, kept), [v.path for v in stale]


def fail(
    session: Session,
    image_id: str,
    token: str,
    reason: str,
    *,
    retryable: bool,
    limits: JobLimits,
) -> tuple[ImageView, list[str], bool]:
    """Fails a job. Returns the image, variant files to remove, and whether it went back to
    the queue."""
    reason = reason.strip()
    if not reason:
        raise invalid("reason", "is required: say why, for a person to read")
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 1] + "…"
    image = leased(session, image_id, token)
    if retryable and image.attempts < limits.max_attempts:
        image.state = "pending"
        image.error = reason
        image.lease_token = None
        image.lease_expires_at = None
        image.updated_at = now()
        return records.load_view(session, image), [], True
    if retryable:
        reason = f"gave up after {image.attempts} attempts: {reason}"
    removed = _end_failed(session, image, reason)
    return ImageView(image, []), removed, False


def _end_failed(session: Session, image: Image, reason: str) -> list[str]:
    """Ends an image failed; its variants (partial work) go. Returns their file keys."""
    paths = list(
        session.scalars(select(ImageVariant.path).where(ImageVariant.image_id == image.id))
    )
    session.execute(delete(ImageVariant).where(ImageVariant.image_id == image.id))
    image.state = "failed"
    image.error = reason[:MAX_REASON]
    image.lease_token = None
    image.lease_expires_at = None
    image.updated_at = now()
    return paths


class JobSignal:
    """Wakes claimers waiting in this process when a job may have appeared (an upload, a
    retryable failure). A sequence number makes a wake-up between a claimer's look at the
    queue and its wait impossible to miss."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._seq = 0

    @property
    def seq(self) -> int:
        with self._cond:
            return self._seq

    def notify(self) -> None:
        with self._cond:
            self._seq += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> bool:
        """Waits until notify() was called since `seen` was read, or timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._seq != seen, timeout)

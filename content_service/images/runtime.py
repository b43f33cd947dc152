"""What both image servicers of one server share: the database, one media store, the media
URLs, one job signal (claimers of this process wake on an upload) and the limits."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from content_service.db.engine import Database
from content_service.images import records
from content_service.images.leases import JobLimits, JobSignal
from content_service.images.media import MediaStore
from content_service.images.urls import MediaUrls
from content_service.settings import ContentSettings

log = logging.getLogger(__name__)

# Variants hashed per transaction by the start-up backfill.
_BACKFILL_BATCH = 200


@dataclass
class ImageRuntime:
    db: Database
    media: MediaStore
    urls: MediaUrls
    max_upload_bytes: int
    limits: JobLimits
    signal: JobSignal
    # Claims allowed to wait at once: each holds a server thread while it waits.
    max_waiters: int

    @classmethod
    def start(
        cls, db: Database, settings: ContentSettings, media: MediaStore, urls: MediaUrls
    ) -> ImageRuntime:
        """The runtime of a server starting up: temp and trash files a crash left in the
        media store are swept first (nothing can be using them yet), and variants stored
        before their hashes were recorded get theirs."""
        runtime = cls(
            db=db,
            media=media,
            urls=urls,
            max_upload_bytes=settings.max_upload_bytes,
            limits=JobLimits(settings.lease_seconds, settings.max_attempts),
            signal=JobSignal(),
            max_waiters=max(1, settings.workers // 2),
        )
        swept = runtime.media.sweep()
        if swept:
            log.info("removed %d stale temp/trash file(s) from %s", swept, runtime.media.root)
        filled = backfill_variant_hashes(db, media)
        if filled:
            log.info("recorded the sha256 of %d variant(s) stored before 0006", filled)
        return runtime


def backfill_variant_hashes(db: Database, media: MediaStore) -> int:
    """Hashes the files of variants with no recorded hash (stored before migration 0006) and
    records them, in batches; a missing file is logged and left (its variant has no URL).
    Safe beside other replicas doing the same: a hash is only written where none is."""
    filled, after = 0, ""
    while True:
        with db.read() as s:
            batch = records.variants_without_hash(s, after, _BACKFILL_BATCH)
        if not batch:
            return filled
        hashes: list[tuple[str, str, str]] = []
        for variant_id, key in batch:
            try:
                hashes.append((variant_id, key, media.sha256(key)))
            except FileNotFoundError:
                log.warning("variant %s: its file %s is missing; it has no URL", variant_id, key)
        with db.write() as s:
            for variant_id, key, sha in hashes:
                records.record_variant_hash(s, variant_id, key, sha)
        filled += len(hashes)
        after = batch[-1][0]

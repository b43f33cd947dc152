"""What both image servicers of one server share: the database, one media store, one job
signal (claimers of this process wake on an upload) and the limits."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from content_service.db.engine import Database
from content_service.images.leases import JobLimits, JobSignal
from content_service.images.media import MediaStore
from content_service.settings import ContentSettings

log = logging.getLogger(__name__)


@dataclass
class ImageRuntime:
    db: Database
    media: MediaStore
    max_upload_bytes: int
    limits: JobLimits
    signal: JobSignal
    # Claims allowed to wait at once: each holds a server thread while it waits.
    max_waiters: int

    @classmethod
    def start(cls, db: Database, settings: ContentSettings) -> ImageRuntime:
        """The runtime of a server starting up: temp and trash files a crash left in the
        media store are swept first (nothing can be using them yet)."""
        runtime = cls(
            db=db,
            media=MediaStore(settings.media_dir),
            max_upload_bytes=settings.max_upload_bytes,
            limits=JobLimits(settings.lease_seconds, settings.max_attempts),
            signal=JobSignal(),
            max_waiters=max(1, settings.workers // 2),
        )
        swept = runtime.media.sweep()
        if swept:
            log.info("removed %d stale temp/trash file(s) from %s", swept, runtime.media.root)
        return runtime

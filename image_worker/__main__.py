"""`python -m image_worker`: claims and processes image jobs until SIGTERM/SIGINT.

The first signal stops claiming and lets in-flight jobs finish for WORKER_GRACE_SECONDS
before the unfinished ones are given back to the queue; a second signal gives them back at
once."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from pydantic import ValidationError

from image_worker.settings import WorkerSettings
from image_worker.worker import Worker
from servicekit import logs, tracing
from servicekit.metrics import MetricsPortInUse
from servicekit.server import wait_for_signal

log = logging.getLogger("image_worker")


def main(argv: list[str] | None = None) -> int:
    if argv:
        print("usage: python -m image_worker (configured by environment variables)")
        return 2
    try:
        settings = WorkerSettings()
    except ValidationError as exc:
        print(f"image_worker: bad settings:\n{exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    tracing.configure(settings.traces, "image_worker")
    signals = 0
    stopping = threading.Event()
    worker = Worker(settings)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        name = signal.Signals(signum).name
        if signals == 1:
            log.info("got %s: no new jobs; in-flight ones get %.0f s", name, settings.grace_seconds)
            stopping.set()
        else:
            log.info("got %s again: giving in-flight jobs back now", name)
            worker.hurry()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        worker.start()
    except MetricsPortInUse as exc:
        log.error("%s; set WORKER_METRICS_PORT to another port", exc)
        return 2
    try:
        wait_for_signal(stopping)
        worker.stop(settings.grace_seconds)
    finally:
        tracing.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

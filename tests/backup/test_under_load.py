"""The issue's acceptance test: a backup taken while 4 clients keep writing pages and uploading
images (and an image worker processes them), restored into a fresh folder, started again:
integrity ok, every write acknowledged before the backup started is there, the vector side
comes level with zero drift, and search and image downloads work."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loom.content.v1 import images_pb2, pages_pb2

from loom_backup.backup import create_backup
from loom_backup.reconcile import level
from loom_backup.restore import restore
from tests.backup.conftest import LiveStack, make_site, quiet, search_pages, site_on
from tests.support import SERVICE_TOKEN, wait_until
from tests.worker import images

WRITERS = 4


@dataclass(frozen=True)
class Ack:
    kind: str  # page | image
    id: str
    value: bytes | str  # the page's title, the image's bytes
    at: float  # monotonic time the write was acknowledged


def test_backup_under_write_load(stacks: Callable[..., LiveStack], tmp_path: Path) -> None:
    stack = stacks(tmp_path / "data")
    stack.start_worker()
    site = make_site(stack)
    # One image processed before the load starts: its variant must come back too.
    first = site.upload(images.photo_jpeg(40, 30, seed=99), "first.jpg")

    def completed() -> bool:
        image = site.images.GetImage(images_pb2.GetImageRequest(id=first.id))
        return bool(image.state == images_pb2.Image.STATE_COMPLETED)

    wait_until(completed, 30, "the first image to be processed")
    acks: list[Ack] = []
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer(n: int) -> None:
        i = 0
        try:
            while not stop.is_set():
                page = site.create_page(f"w{n}-{i}", f"writer {n} wrote entry {i} about harbours")
                done = time.monotonic()
                with lock:
                    acks.append(Ack("page", page.id, page.title, done))
                data = images.photo_jpeg(24, 16, seed=n * 100_000 + i)
                image = site.upload(data, f"w{n}-{i}.jpg")
                done = time.monotonic()
                with lock:
                    acks.append(Ack("image", image.id, data, done))
                i += 1
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(acks) >= 40, 30, "writes before the backup")

    started = time.monotonic()
    outcome = create_backup(tmp_path / "backups" / "under-load", stack.settings(), quiet())
    finished = time.monotonic()
    # Keep writing a little after the backup too: none of it may leak into the restore.
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not failures, failures
    stack.stop()

    before = [a for a in acks if a.at < started]
    during = [a for a in acks if started <= a.at <= finished]
    after = [a for a in acks if a.at > finished]
    assert len(before) >= 40
    assert during, "the stack served no write while the backup ran"
    snapshot = outcome.manifest.content
    pages_in_backup = snapshot["tables"]["pages"]
    assert len([a for a in before if a.kind == "page"]) <= pages_in_backup
    assert pages_in_backup < len([a for a in acks if a.kind == "page"])

    restored = tmp_path / "restored"
    restore(outcome.target, restored, printer=quiet())

    again = stacks(restored)
    report = level(again.content.channel, SERVICE_TOKEN, quiet(), timeout=60)
    assert report.drift == 0, report.final

    same = site_on(again, site)
    for ack in before:
        if ack.kind == "page":
            page = same.tenant.client.pages.GetPage(pages_pb2.GetPageRequest(id=ack.id))
            assert page.title == ack.value
        else:
            assert same.download(ack.id) == ack.value
    # Nothing acknowledged after the backup completed is in it.
    for ack in after:
        if ack.kind == "page":
            listed = same.tenant.client.pages.ListPages(
                pages_pb2.ListPagesRequest(environment_id=site.tenant.env_id, page_size=1000)
            )
            assert ack.id not in {p.id for p in listed.pages}
            break
    # Semantic search finds pages written before the backup, in the restored stack.
    for ack in [a for a in before if a.kind == "page"][:5]:
        slug = str(ack.value).removeprefix("Page ")
        n, i = slug.removeprefix("w").split("-")
        text = f"{ack.value}\nwriter {n} wrote entry {i} about harbours"
        assert ack.id in search_pages(again, same, text)[:3]
    # A processed image's variant came back with it.
    image = same.images.GetImage(images_pb2.GetImageRequest(id=first.id))
    assert image.state == images_pb2.Image.STATE_COMPLETED
    variant = image.variants[0]
    assert same.download(image.id, (variant.width, variant.format))

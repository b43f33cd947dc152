"""A backup of a stack at rest, restored and started again: the basic round trip, the
manifest's contents, the tar form, and `verify`."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

from loom.content.v1 import pages_pb2

from loom_backup import manifest as mf
from loom_backup.backup import create_backup
from loom_backup.reconcile import level
from loom_backup.restore import restore
from tests.backup.conftest import LiveStack, make_site, quiet, search_pages, site_on
from tests.support import SERVICE_TOKEN
from tests.worker import images


def test_round_trip_restores_pages_images_and_vectors(
    stacks: Callable[..., LiveStack], tmp_path: Path
) -> None:
    stack = stacks(tmp_path / "data")
    site = make_site(stack)
    pages = [site.create_page(f"page-{i}", f"lighthouse keeper {i}") for i in range(3)]
    photo = images.photo_jpeg(40, 30, seed=1)
    image = site.upload(photo, "harbour.jpg")
    stack.drained()

    outcome = create_backup(tmp_path / "backups" / "b1", stack.settings(), quiet())
    stack.stop()

    data = outcome.manifest.data
    assert data["format"] == mf.FORMAT
    assert data["content"]["backend"] == "sqlite"
    assert data["content"]["tables"]["pages"] == 3
    assert data["content"]["outbox"] == {
        "pending_count": 0,
        "max_id": data["content"]["outbox"]["max_id"],
    }
    assert data["content"]["media"]["files"] == 1
    tables = {t["table"]: t for t in data["vector"]["tables"]}
    assert tables["page_embeddings"]["rows"] == 3
    assert tables["page_embeddings"]["model"]
    assert {f["path"] for f in data["files"]} >= {"content/content.db"}
    # The backup folder holds exactly the manifest and the files it lists.
    on_disk = {
        p.relative_to(outcome.target).as_posix() for p in outcome.target.rglob("*") if p.is_file()
    }
    assert on_disk == {f["path"] for f in data["files"]} | {mf.MANIFEST}
    # One version per table: the history a live table keeps is not copied.
    versions = list(
        (outcome.target / "vector/lancedb/page_embeddings.lance/_versions").glob("*.manifest")
    )
    assert len(versions) == 1

    restored = tmp_path / "restored"
    restore(outcome.target, restored, printer=quiet())
    assert (restored / "content.db").is_file()
    assert not (restored / "admin.key").exists()  # secrets are not in backups

    again = stacks(restored)
    report = level(again.content.channel, SERVICE_TOKEN, quiet(), timeout=60)
    assert report.drift == 0
    same = site_on(again, site)
    for page in pages:
        got = same.tenant.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id))
        assert got.title == page.title
    assert same.download(image.id) == photo
    assert pages[1].id in search_pages(again, same, "Page page-1\nlighthouse keeper 1")[:1]


def test_tar_backup_and_verify(stacks: Callable[..., LiveStack], tmp_path: Path) -> None:
    stack = stacks(tmp_path / "data")
    site = make_site(stack)
    site.create_page("one", "tar pits")
    site.upload(images.photo_jpeg(20, 20, seed=2), "a.jpg")
    stack.drained()
    target = tmp_path / "b.tar"
    outcome = create_backup(target, stack.settings(), quiet())
    assert target.is_file()
    assert not list(tmp_path.glob(".b.tar.partial-*"))
    with tarfile.open(target) as tar:
        names = tar.getnames()
    assert names[0] == mf.MANIFEST
    assert set(names[1:]) == {f.path for f in outcome.manifest.files}
    checked = restore(target, target, printer=quiet(), verify_only=True)
    assert checked.files == len(outcome.manifest.files)
    assert not list(tmp_path.glob(".b.tar.verify-*"))

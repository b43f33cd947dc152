"""The command as a person runs it: `backup`, then `restore` of that backup into an empty
folder, which starts the services on the restored data, drains the outbox, reconciles and
reports zero drift; then `reconcile` against a running stack."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from loom.content.v1 import pages_pb2

from loom_backup.__main__ import main
from tests.backup.conftest import LiveStack, make_site, search_pages, site_on
from tests.support import SERVICE_TOKEN
from tests.worker import images

OWN_PREFIXES = ("CONTENT_", "VECTOR_", "WORKER_", "BACKUP_", "LOOM_", "DATA_DIR")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The command reads its settings (and the restored services theirs) from the environment:
    none of the caller's shell."""
    for name in list(os.environ):
        if name.startswith(OWN_PREFIXES):
            monkeypatch.delenv(name)
    return monkeypatch


def test_backup_restore_and_level_through_the_command(
    stacks: Callable[..., LiveStack],
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack = stacks(tmp_path / "data")
    site = make_site(stack)
    page = site.create_page("about", "we repair sailing boats")
    photo = images.photo_jpeg(32, 24, seed=7)
    image = site.upload(photo, "boat.jpg")
    stack.drained()
    clean_env.setenv("DATA_DIR", str(stack.data_dir))
    clean_env.setenv("LOOM_SERVICE_TOKEN", SERVICE_TOKEN)
    target = tmp_path / "backups" / "nightly.tar"
    code = main(
        [
            "--quiet",
            "backup",
            str(target),
            "--content",
            stack.content.address,
            "--vector",
            stack.vector.address,
        ],
        configure_logs=False,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"backup complete: {target}" in out
    assert "vector: page_embeddings" in out
    stack.stop()

    restored = tmp_path / "restored"
    clean_env.setenv("VECTOR_EMBEDDER", "hash")  # what the backed-up tables were made with
    code = main(
        ["--quiet", "restore", str(target), "--data-dir", str(restored)], configure_logs=False
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "every checksum and row count checked" in out
    assert "zero drift" in out

    again = stacks(restored)
    same = site_on(again, site)
    got = same.tenant.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id))
    assert got.title == page.title
    assert same.download(image.id) == photo
    assert search_pages(again, same, "Page about\nwe repair sailing boats")[:1] == [page.id]

    clean_env.setenv("DATA_DIR", str(restored))
    code = main(["--quiet", "reconcile", "--content", again.content.address], configure_logs=False)
    assert code == 0
    assert "zero drift" in capsys.readouterr().out

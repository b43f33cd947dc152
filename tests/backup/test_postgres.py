"""PostgreSQL: the backup is a pg_dump of an exported snapshot (row counts and outbox position
from the same snapshot), restored with pg_restore into an empty database given to the
command, in one transaction, and checked table by table."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from loom.content.v1 import pages_pb2

from loom_backup.backup import create_backup
from loom_backup.errors import BackupError
from loom_backup.reconcile import level
from loom_backup.restore import restore
from tests.backup.conftest import LiveStack, make_site, quiet, site_on
from tests.support import SERVICE_TOKEN, postgres_database, postgres_wanted
from tests.worker import images

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not postgres_wanted(), reason="LOOM_TEST_POSTGRES=0"),
    pytest.mark.skipif(shutil.which("pg_dump") is None, reason="no pg_dump (make setup)"),
]


def test_postgres_backup_and_restore(stacks: Callable[..., LiveStack], tmp_path: Path) -> None:
    with postgres_database() as source_url, postgres_database() as target_url:
        stack = stacks(tmp_path / "data", source_url)
        site = make_site(stack)
        pages = [site.create_page(f"pg-{i}", f"postgres page {i}") for i in range(3)]
        photo = images.photo_jpeg(20, 20, seed=3)
        image = site.upload(photo, "pg.jpg")
        stack.drained()
        outcome = create_backup(tmp_path / "backup", stack.settings(), quiet())
        stack.stop()
        content = outcome.manifest.content
        assert content["backend"] == "postgresql"
        assert content["database_file"] == "content.dump"
        assert content["tables"]["pages"] == 3
        assert content["schema_revision"]

        # The source database is not empty: refused before anything is restored.
        with pytest.raises(BackupError, match="already has tables"):
            restore(outcome.target, tmp_path / "x", database_url=source_url, printer=quiet())
        with pytest.raises(BackupError, match="--database-url"):
            restore(outcome.target, tmp_path / "x", printer=quiet())
        assert not (tmp_path / "x").exists()
        # A damaged dump is refused before pg_restore runs.
        damaged = tmp_path / "damaged"
        shutil.copytree(outcome.target, damaged)
        dump = damaged / "content/content.dump"
        dump.write_bytes(dump.read_bytes()[:-7] + b"garbage")
        with pytest.raises(BackupError, match=r"content/content\.dump"):
            restore(damaged, tmp_path / "x", database_url=target_url, printer=quiet())

        restored = tmp_path / "restored"
        restore(outcome.target, restored, database_url=target_url, printer=quiet())
        assert not (restored / "content.db").exists()
        assert not list(restored.rglob("*.dump"))
        again = stacks(restored, target_url)
        try:
            report = level(again.content.channel, SERVICE_TOKEN, quiet(), timeout=60)
            assert report.drift == 0, report.final
            same = site_on(again, site)
            for page in pages:
                got = same.tenant.client.pages.GetPage(pages_pb2.GetPageRequest(id=page.id))
                assert got.title == page.title
            assert same.download(image.id) == photo
        finally:
            again.stop()
        assert json.loads((outcome.target / "manifest.json").read_text())["files"]

"""The two backup RPCs: who may call them, which folders they accept, and what an interrupted
or failed backup leaves behind (nothing that looks complete)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from loom.content.v1 import backup_pb2 as content_backup_pb2
from loom.content.v1 import backup_pb2_grpc as content_backup_grpc
from loom.vector.v1 import backup_pb2 as vector_backup_pb2
from loom.vector.v1 import backup_pb2_grpc as vector_backup_grpc

from loom_backup.backup import create_backup
from loom_backup.errors import BackupError
from loom_backup.progress import Printer
from tests.backup.conftest import LiveStack, make_site, quiet
from tests.support import SERVICE_TOKEN, Stub, raises_status, wait_until
from tests.worker import images


def content_backup(stack: LiveStack, directory: str, key: str = SERVICE_TOKEN) -> list[object]:
    stub = Stub(content_backup_grpc.BackupServiceStub(stack.content.channel), key)
    return list(stub.CreateBackup(content_backup_pb2.CreateBackupRequest(directory=directory)))


def vector_backup(stack: LiveStack, directory: str, key: str = SERVICE_TOKEN) -> list[object]:
    stub = Stub(vector_backup_grpc.VectorBackupServiceStub(stack.vector.channel), key)
    return list(
        stub.CreateVectorBackup(vector_backup_pb2.CreateVectorBackupRequest(directory=directory))
    )


def test_only_the_service_token_and_only_good_folders(
    stacks: Callable[..., LiveStack], tmp_path: Path
) -> None:
    stack = stacks(tmp_path / "data")
    site = make_site(stack)
    site.create_page("p", "a page")
    stack.drained()
    for call in (content_backup, vector_backup):
        with raises_status(grpc.StatusCode.PERMISSION_DENIED):
            call(stack, str(tmp_path / "x"), site.tenant.key)
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as error:
            call(stack, "relative/folder")
        assert error["fields"] == ["directory"]
        with raises_status(grpc.StatusCode.ALREADY_EXISTS):
            call(stack, str(tmp_path / "data"))
        with raises_status(grpc.StatusCode.FAILED_PRECONDITION) as error:
            call(stack, str(tmp_path / "no" / "such" / "parent"))
        assert error["reason"] == "BACKUP_PATH_NOT_VISIBLE"
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as error:
        content_backup(stack, str(tmp_path / "data" / "media" / "inside"))
    assert "media folder" in error["message"]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as error:
        vector_backup(stack, str(tmp_path / "data" / "lancedb" / "inside"))
    assert "LanceDB folder" in error["message"]
    # And a good folder works, each half on its own.
    answers = content_backup(stack, str(tmp_path / "content-half"))
    assert answers[-1].WhichOneof("event") == "summary"  # type: ignore[attr-defined]
    assert (tmp_path / "content-half" / "content.db").is_file()
    answers = vector_backup(stack, str(tmp_path / "vector-half"))
    summary = answers[-1].summary  # type: ignore[attr-defined]
    assert {t.table_name for t in summary.tables} >= {"page_embeddings"}


def test_hostile_paths_are_invalid_argument(
    stacks: Callable[..., LiveStack], tmp_path: Path
) -> None:
    """Length, characters and the allowed roots (LOOM_BACKUP_ROOTS; by default the folder
    that holds DATA_DIR, here tmp_path), each INVALID_ARGUMENT on `directory`, nothing made."""
    stack = stacks(tmp_path / "data")
    before = sorted(p.name for p in tmp_path.iterdir())
    hostile = {
        "a 4,096-character component": str(tmp_path / ("x" * 4096)),
        "a 400-byte component (2-byte characters)": str(tmp_path / ("é" * 200)),
        "too long overall": str(tmp_path / "/".join(["abcdefgh"] * 200)),
        "a NUL": str(tmp_path / "a\x00b"),
        "a newline": str(tmp_path / "a\nb"),
        "outside the roots": "/etc/loom-backup-test",
        "outside through ..": str(tmp_path / ".." / ".." / "etc" / "loom"),
        "the root itself": str(tmp_path),
        "the file system root": "/",
    }
    for what, directory in hostile.items():
        for call in (content_backup, vector_backup):
            with raises_status(grpc.StatusCode.INVALID_ARGUMENT) as error:
                call(stack, directory)
            assert error["fields"] == ["directory"], what
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not Path("/etc/loom-backup-test").exists()


class InterruptAt(Printer):
    """Stands for Ctrl-C: raises KeyboardInterrupt when a milestone containing `text` shows."""

    def __init__(self, text: str) -> None:
        super().__init__(io.StringIO())
        self.text = text

    def line(self, text: str) -> None:
        if self.text in text:
            raise KeyboardInterrupt
        super().line(text)


def leftovers(stack: LiveStack, parent: Path) -> list[str]:
    pins = [
        p.name
        for folder in (stack.data_dir / "media", stack.data_dir / "lancedb")
        for p in folder.iterdir()
        if p.name.startswith((".backup-pin-", ".loom-backup-"))
    ]
    return sorted([p.name for p in parent.iterdir()] + pins)


@pytest.mark.parametrize("moment", ["database copy complete", "media blob(s) copied", "verified"])
def test_an_interrupted_backup_leaves_nothing(
    stacks: Callable[..., LiveStack], tmp_path: Path, moment: str
) -> None:
    stack = stacks(tmp_path / "data")
    site = make_site(stack)
    for i in range(5):
        site.create_page(f"p{i}", f"page {i}")
        site.upload(images.photo_jpeg(16, 16, seed=i), f"{i}.jpg")
    stack.drained()
    parent = tmp_path / "backups"
    with pytest.raises(KeyboardInterrupt):
        create_backup(parent / "b", stack.settings(), InterruptAt(moment))
    # The services notice the cancellation and remove their halves and their pins.
    wait_until(lambda: leftovers(stack, parent) == [], 15, "the backup's leftovers to go")
    # And the stack is fine: the next backup works.
    outcome = create_backup(parent / "b", stack.settings(), quiet())
    assert json.loads((outcome.target / "manifest.json").read_text())["content"]["tables"]


def test_an_unreachable_service_fails_before_anything_is_written(
    stacks: Callable[..., LiveStack], tmp_path: Path
) -> None:
    stack = stacks(tmp_path / "data")
    settings = stack.settings().model_copy(
        update={"vector_address": "127.0.0.1:9", "connect_timeout_seconds": 0.5}
    )
    with pytest.raises(BackupError, match=r"vector_service at 127\.0\.0\.1:9 is not reachable"):
        create_backup(tmp_path / "backups" / "b", settings, quiet())
    assert list((tmp_path / "backups").iterdir()) == []


def test_a_backup_never_overwrites(stacks: Callable[..., LiveStack], tmp_path: Path) -> None:
    stack = stacks(tmp_path / "data")
    (tmp_path / "taken").mkdir()
    with pytest.raises(BackupError, match="already exists"):
        create_backup(tmp_path / "taken", stack.settings(), quiet())

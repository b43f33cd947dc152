"""A damaged, partial or misdirected restore is refused, naming what is wrong, before anything
is written where the data folder goes."""

from __future__ import annotations

import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from loom_backup import manifest as mf
from loom_backup.__main__ import main
from loom_backup.backup import create_backup
from loom_backup.errors import BackupError
from loom_backup.restore import restore
from tests.backup.conftest import make_site, quiet, start_stack
from tests.worker import images


@dataclass(frozen=True)
class Backups:
    folder: Path
    tar: Path


@pytest.fixture(scope="module")
def backups(tmp_path_factory: pytest.TempPathFactory) -> Backups:
    """One small backup, as a folder and as a tar, shared by the tests (each damages a copy)."""
    root = tmp_path_factory.mktemp("refusals")
    stack = start_stack(root / "data")
    try:
        site = make_site(stack)
        for i in range(3):
            site.create_page(f"p{i}", f"refusal test page {i}")
            site.upload(images.photo_jpeg(16, 16, seed=i), f"i{i}.jpg")
        stack.drained()
        folder = create_backup(root / "backup", stack.settings(), quiet()).target
        tar = create_backup(root / "backup.tar", stack.settings(), quiet()).target
    finally:
        stack.stop()
    return Backups(folder, tar)


def copy_of(backups: Backups, tmp_path: Path) -> Path:
    target = tmp_path / "backup"
    shutil.copytree(backups.folder, target)
    return target


def refused(backup: Path, target: Path, *fragments: str) -> str:
    with pytest.raises(BackupError) as info:
        restore(backup, target, printer=quiet())
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    # Nothing where the data folder goes, and no temp folder left beside it.
    assert not target.exists()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}")]
    return message


def media_file(backup: Path) -> str:
    manifest = json.loads((backup / mf.MANIFEST).read_text())
    return next(f["path"] for f in manifest["files"] if f["path"].startswith("content/media/"))


def test_a_flipped_byte_is_refused_naming_the_file(backups: Backups, tmp_path: Path) -> None:
    backup = copy_of(backups, tmp_path)
    victim = media_file(backup)
    path = backup / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    refused(backup, tmp_path / "data", "damaged", victim, "sha256")


def test_a_flipped_byte_in_the_database_is_refused(backups: Backups, tmp_path: Path) -> None:
    backup = copy_of(backups, tmp_path)
    path = backup / "content/content.db"
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    path.write_bytes(bytes(data))
    refused(backup, tmp_path / "data", "content/content.db")


def test_a_deleted_file_is_refused_naming_it(backups: Backups, tmp_path: Path) -> None:
    backup = copy_of(backups, tmp_path)
    manifest = json.loads((backup / mf.MANIFEST).read_text())
    victim = next(f["path"] for f in manifest["files"] if f["path"].startswith("vector/"))
    (backup / victim).unlink()
    refused(backup, tmp_path / "data", victim, "missing")


def test_a_truncated_file_is_refused(backups: Backups, tmp_path: Path) -> None:
    backup = copy_of(backups, tmp_path)
    victim = media_file(backup)
    path = backup / victim
    path.write_bytes(path.read_bytes()[:10])
    refused(backup, tmp_path / "data", victim, "10 bytes")


def test_a_truncated_manifest_is_refused(backups: Backups, tmp_path: Path) -> None:
    backup = copy_of(backups, tmp_path)
    path = backup / mf.MANIFEST
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    refused(backup, tmp_path / "data", "manifest.json is damaged")


def test_an_edited_manifest_is_refused(backups: Backups, tmp_path: Path) -> None:
    backup = copy_of(backups, tmp_path)
    path = backup / mf.MANIFEST
    data = json.loads(path.read_text())
    data["content"]["tables"]["pages"] += 1
    path.write_text(json.dumps(data))
    refused(backup, tmp_path / "data", "manifest.json is damaged", "checksum")


def test_a_backup_without_manifest_is_partial(backups: Backups, tmp_path: Path) -> None:
    backup = copy_of(backups, tmp_path)
    (backup / mf.MANIFEST).unlink()
    refused(backup, tmp_path / "data", "not a complete backup")


def test_a_damaged_tar_is_refused(backups: Backups, tmp_path: Path) -> None:
    tar = tmp_path / "backup.tar"
    shutil.copyfile(backups.tar, tar)
    with tarfile.open(tar) as archive:
        member = next(m for m in archive.getmembers() if m.name.startswith("content/media/"))
    data = bytearray(tar.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x01
    tar.write_bytes(bytes(data))
    refused(tar, tmp_path / "data", member.name, "sha256")
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(backups.tar.read_bytes()[: backups.tar.stat().st_size // 3])
    refused(truncated, tmp_path / "data2")


def test_a_non_empty_data_folder_is_refused_and_left_alone(
    backups: Backups, tmp_path: Path
) -> None:
    target = tmp_path / "data"
    target.mkdir()
    (target / "content.db").write_bytes(b"precious")
    with pytest.raises(BackupError, match="is not empty"):
        restore(backups.folder, target, printer=quiet())
    assert [p.name for p in target.iterdir()] == ["content.db"]
    assert (target / "content.db").read_bytes() == b"precious"


def test_an_empty_existing_data_folder_is_filled(backups: Backups, tmp_path: Path) -> None:
    """A mount point (compose's volume) cannot be renamed over: its entries are moved in."""
    target = tmp_path / "data"
    target.mkdir()
    restore(backups.tar, target, printer=quiet())
    assert sorted(p.name for p in target.iterdir()) == ["content.db", "lancedb", "media"]


def test_a_sqlite_backup_is_not_restored_into_postgres(backups: Backups, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="SQLite"):
        restore(
            backups.folder,
            tmp_path / "data",
            database_url="postgresql://postgres@127.0.0.1:5432/nowhere",
            printer=quiet(),
        )
    assert not (tmp_path / "data").exists()


def test_the_command_refuses_with_exit_1(
    backups: Backups, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = copy_of(backups, tmp_path)
    victim = media_file(backup)
    (backup / victim).write_bytes(b"not the image")
    code = main(
        ["--quiet", "restore", str(backup), "--data-dir", str(tmp_path / "data")],
        configure_logs=False,
    )
    assert code == 1
    assert victim in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
    assert main(["--quiet", "verify", str(backups.folder)], configure_logs=False) == 0
    assert main(["--quiet", "verify", str(backup)], configure_logs=False) == 1

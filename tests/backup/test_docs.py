"""The backup command's settings are documented like every other process's."""

from __future__ import annotations

from pathlib import Path

from loom_backup.settings import BackupSettings
from tests.integration.stack import setting_env_names

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_of_the_command_is_documented() -> None:
    docs = (ROOT / "docs" / "backup.md").read_text()
    readme = (ROOT / "README.md").read_text()
    names = setting_env_names(BackupSettings).values()
    assert sorted(env for env in names if f"`{env}`" not in docs) == []
    assert (
        sorted(env for env in names if env.startswith("BACKUP_") and f"`{env}`" not in readme) == []
    )

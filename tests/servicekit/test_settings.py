"""servicekit.settings: the shared base of the four settings classes, and no secret in any of
their reprs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from content_service.settings import ContentSettings
from image_worker.settings import WorkerSettings
from loom_backup.errors import BackupError
from loom_backup.settings import BackupSettings
from servicekit.settings import LoomSettings, ServiceSettings
from tests.integration.stack import setting_env_names
from vector_service.settings import VectorSettings

SECRETS = {
    "LOOM_SERVICE_TOKEN": "svc-token-3f9a",
    "CONTENT_ADMIN_KEY": "admin-key-81c2",
    "VECTOR_OPENAI_API_KEY": "sk-openai-55d0",
    "WORKER_VISION_API_KEY": "sk-vision-9e47",
    # A database URL may carry a password.
    "CONTENT_DATABASE_URL": "postgresql://loom:db-password-a1b7@127.0.0.1:5432/loom",
}
SERVICES = [ContentSettings, VectorSettings, WorkerSettings]
ALL = [*SERVICES, BackupSettings]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("CONTENT_", "VECTOR_", "WORKER_", "BACKUP_", "OPENAI_")):
            monkeypatch.delenv(name)
    for name in ("LOOM_SERVICE_TOKEN", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))


@pytest.mark.parametrize("settings_class", ALL)
def test_no_secret_is_in_a_repr(
    monkeypatch: pytest.MonkeyPatch, settings_class: type[LoomSettings]
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    settings = settings_class()
    shown = f"{settings!r} {settings} {settings.__repr_args__()}"
    assert [name for name, value in SECRETS.items() if value in shown] == []
    # The values are still there for whoever sends them.
    assert settings.token() == SECRETS["LOOM_SERVICE_TOKEN"]


@pytest.mark.parametrize("settings_class", ALL)
def test_every_process_shares_the_base_with_the_same_variables(
    settings_class: type[LoomSettings],
) -> None:
    names = setting_env_names(settings_class)
    assert issubclass(settings_class, LoomSettings)
    assert (names["data_dir"], names["service_token"]) == ("DATA_DIR", "LOOM_SERVICE_TOKEN")
    assert isinstance(settings_class().service_token, SecretStr)
    if settings_class in SERVICES:
        assert issubclass(settings_class, ServiceSettings)
        assert names["log_level"] == "LOG_LEVEL"
        assert settings_class().log_level == "INFO"  # type: ignore[attr-defined]
    else:
        # The backup command logs at WARNING, or INFO with -v; it never read LOG_LEVEL.
        assert "log_level" not in names


def test_the_services_create_the_token_file_the_backup_command_only_reads_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(BackupError, match="no service token"):
        BackupSettings().token()
    assert not (tmp_path / "service.token").exists()
    token = VectorSettings().token()
    assert token.startswith("loomsvc_")
    assert ContentSettings().token() == WorkerSettings().token() == token
    assert BackupSettings().token() == token


def test_a_token_passed_in_code_is_a_secret_too() -> None:
    settings = WorkerSettings(service_token="in-code-token")
    assert "in-code-token" not in repr(settings)
    assert settings.token() == "in-code-token"

"""The README documents every setting each process reads (issue: "every setting is
documented in the README with its default")."""

from __future__ import annotations

from pathlib import Path

import pytest

from content_service.settings import ContentSettings
from image_worker.settings import WorkerSettings
from tests.integration.stack import setting_env_names
from vector_service.settings import VectorSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("settings_class", [ContentSettings, VectorSettings, WorkerSettings])
def test_every_setting_is_in_the_readme(settings_class: type) -> None:
    names = setting_env_names(settings_class)
    missing = sorted(env for env in names.values() if f"`{env}`" not in README)
    assert missing == []

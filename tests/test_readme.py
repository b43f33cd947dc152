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


ROOT = Path(__file__).resolve().parent.parent


def _layout() -> list[Path]:
    """The paths named in the README's Layout tree (top level at column 0, their children
    indented by two)."""
    block = README.split("## Layout", 1)[1].split("```", 2)[1]
    named: list[Path] = []
    parent = ROOT
    for line in block.splitlines():
        if not line.strip() or line.startswith(" " * 4):  # blank, or a wrapped description
            continue
        nested = line.startswith("  ")
        names = line.strip().split("   ")[0].split()
        for name in names:
            if "<" in name or name == "...":
                continue
            path = (parent if nested else ROOT) / name
            named.append(path)
            if not nested and name.endswith("/"):
                parent = path
    return named


def test_the_layout_names_only_what_exists() -> None:
    named = _layout()
    assert len(named) > 10
    assert [p.relative_to(ROOT) for p in named if not p.exists()] == []


@pytest.mark.parametrize("package", ["content_service", "vector_service"])
def test_the_layout_names_every_subpackage(package: str) -> None:
    named = set(_layout())
    folders = [p for p in (ROOT / package).iterdir() if (p / "__init__.py").exists()]
    assert [p.name for p in folders if p not in named] == []

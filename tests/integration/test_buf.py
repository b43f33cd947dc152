"""The API contract as buf sees it: lint-clean, and no breaking change (WIRE_JSON, buf.yaml)
against the previous commit, where clients built on it may already live."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.stack import ROOT

PREVIOUS = "HEAD~1"


def buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    if not (ROOT / "node_modules" / ".bin" / "buf").exists():
        pytest.fail("node_modules/.bin/buf is missing: run `make setup` (npm ci)", pytrace=False)
    npx = shutil.which("npx")
    assert npx is not None, "npx (Node.js) is not on PATH"
    return subprocess.run(
        [npx, "--no-install", "buf", *args], cwd=cwd, capture_output=True, text=True, timeout=90
    )


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_buf_lint() -> None:
    done = buf("lint")
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_breaking_change_against_the_previous_commit() -> None:
    if git("rev-parse", "--verify", "--quiet", f"{PREVIOUS}^{{commit}}").returncode != 0:
        shallow = git("rev-parse", "--is-shallow-repository").stdout.strip() == "true"
        pytest.skip(
            f"no previous commit ({PREVIOUS}) to compare the protos with"
            + (" (shallow clone: fetch more history)" if shallow else "")
        )
    if not git("ls-tree", "-d", "--name-only", PREVIOUS, "protos").stdout.strip():
        pytest.skip(f"the previous commit ({PREVIOUS}) has no protos/ to compare with")
    done = buf("breaking", "--against", f".git#ref={PREVIOUS}")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_breaking_check_catches_a_break(tmp_path: Path) -> None:
    """Proves the check above has teeth: a copy of the protos with a field renumbered must
    fail it. (WIRE_JSON judges the wire and JSON forms only: a removed RPC is not one of its
    rules.)"""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    pages = tmp_path / "protos" / "loom" / "content" / "v1" / "pages.proto"
    text = pages.read_text()
    broken = text.replace("string slug = 3;", "string slug = 30;", 1)
    assert broken != text
    pages.write_text(broken)
    done = buf("breaking", str(tmp_path), "--against", str(ROOT))
    assert done.returncode != 0
    assert 'field "3" with name "slug"' in done.stdout + done.stderr

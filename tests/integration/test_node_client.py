"""A Node.js client (@grpc/grpc-js + @grpc/proto-loader, our .proto files, no generated code)
creates a tenant and a page and reads it back: the API works from another language."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack import ROOT, StackInfo

CLIENT = Path(__file__).parent / "node" / "client.js"


def run_client(*args: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is not on PATH (the README lists Node.js as a requirement)", pytrace=False
        )
    for package in ("@grpc/grpc-js", "@grpc/proto-loader"):
        if not (ROOT / "node_modules" / package).is_dir():
            pytest.fail(f"node_modules/{package} is missing: run `make setup`", pytrace=False)
    done = subprocess.run(
        [node, str(CLIENT), *args], cwd=ROOT, capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_node_client_creates_and_reads_a_page(stack: StackInfo) -> None:
    summary = run_client(stack.content, stack.admin_key)
    assert summary["slug"] == "from-node"
    assert summary["title"] == "Written from Node.js"
    assert summary["metadata"] == {"lang": "en", "tags": ["node", "grpc-js"]}
    assert summary["sections"] == [
        {
            "position": 0,
            "definition_name": "hero",
            "content": {"title": "Hello from Node", "count": 3},
        },
        {"position": 1, "definition_name": "hero", "content": {"title": "Welcome"}},
    ]
    assert summary["unauthenticated_without_key"] is True
    assert summary["not_found_for_unknown_id"] is True
    assert summary["search_found_page"] is None


@pytest.mark.needs_vector
@pytest.mark.needs_indexing
def test_node_client_finds_its_page_by_semantic_search(stack: StackInfo) -> None:
    assert stack.vector is not None
    summary = run_client(stack.content, stack.admin_key, stack.vector)
    assert summary["search_found_page"] is True

"""vector_service with LanceDB on an S3-compatible store (moto's real S3 server, tests/s3.py),
configured only through the VECTOR_S3_* settings: no AWS_* variables in the environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3 import ACCESS_KEY, REGION, SECRET_KEY, S3Server, serving_s3
from tests.support import VectorServer, hash_embedder, serving_vector, vector_settings
from tests.vector.conftest import doc, ids, search, upsert


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with serving_s3(tmp_path_factory.mktemp("moto")) as server:
        yield server


def _settings(s3: S3Server, bucket: str) -> dict[str, object]:
    return {
        "lancedb_uri": f"s3://{bucket}/vectors",
        "s3_endpoint": s3.endpoint,
        "s3_region": REGION,
        "s3_access_key_id": ACCESS_KEY,
        "s3_secret_access_key": SECRET_KEY,
        "s3_allow_http": True,
    }


def test_documents_written_to_s3_are_found_after_a_restart(
    tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_ALLOW_HTTP"):
        monkeypatch.delenv(name, raising=False)
    settings = vector_settings(tmp_path, **_settings(s3, s3.bucket()))
    server: VectorServer
    with serving_vector(settings, hash_embedder()) as server:
        upsert(server.service, [doc("p1", "tide pools at dawn"), doc("p2", "mountain huts")])
    assert not (tmp_path / "lancedb").exists()
    with serving_vector(settings, hash_embedder()) as server:
        assert ids(search(server.service, "tide pools at dawn"))[0] == "p1"

"""Parts of the worker without servers: settings from the environment, the indexed text, and
the process pool surviving a crashed process."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from loom.content.v1 import images_pb2
from pydantic import ValidationError

from image_worker.processing import Limits, Processed
from image_worker.settings import WorkerSettings, available_cores
from image_worker.vision import Description
from image_worker.worker import _PoolProcessor, index_text


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOOM_SERVICE_TOKEN", "DATA_DIR", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("WORKER_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = WorkerSettings()
    assert settings.content_address == "127.0.0.1:50051"
    assert settings.vector_address == "127.0.0.1:50052"
    assert settings.concurrency == available_cores()
    assert settings.mode == "threads"
    assert settings.widths == (320, 640, 1024, 1920)
    assert settings.formats == ("webp", "avif")
    assert not settings.vision_enabled


def test_lists_and_modes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_WIDTHS", "1920, 320,640,320")
    monkeypatch.setenv("WORKER_FORMATS", "AVIF")
    monkeypatch.setenv("WORKER_MODE", "processes")
    monkeypatch.setenv("WORKER_CONCURRENCY", "3")
    monkeypatch.setenv("WORKER_VISION_BASE_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.setenv("WORKER_VISION_API_KEY", "sk-secret")
    settings = WorkerSettings()
    assert settings.widths == (320, 640, 1920)
    assert settings.formats == ("avif",)
    assert (settings.mode, settings.concurrency) == ("processes", 3)
    assert settings.vision_enabled
    assert "sk-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WORKER_WIDTHS", "0,640"),
        ("WORKER_WIDTHS", "20000"),
        ("WORKER_WIDTHS", ""),
        ("WORKER_FORMATS", "webp,gif"),
        ("WORKER_MODE", "fibers"),
        ("WORKER_CONCURRENCY", "0"),
        ("WORKER_CLAIM_WAIT_SECONDS", "31"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        WorkerSettings()


def test_service_token_comes_from_the_environment_or_the_shared_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    token = WorkerSettings().token()
    path = tmp_path / "service.token"
    assert path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert WorkerSettings().token() == token  # read, not made again
    monkeypatch.setenv("LOOM_SERVICE_TOKEN", "from-env")
    assert WorkerSettings().token() == "from-env"


def test_index_text_joins_name_alt_text_caption_and_tags() -> None:
    job = images_pb2.ImageJob(image_id="img1", filename="beach  day.jpg")
    described = Description("Waves", "Surf at dusk.", ("sea", "surf"))
    assert index_text(job, "Waves", described) == (
        "beach day.jpg\nWaves\nSurf at dusk.\ntags: sea, surf"
    )
    assert index_text(job, "", None) == "beach day.jpg"


def crash(data: bytes, *_: object) -> Processed:
    """Dies like a native decoder bug would: no exception, the process is just gone."""
    if data == b"crash":
        os._exit(1)
    return Processed(variants=[], metadata={"size": len(data)})


def test_a_crashed_processing_process_costs_the_job_not_the_worker() -> None:
    pool = _PoolProcessor(Limits(), (64,), ("webp",), workers=1, target=crash)
    try:
        with pytest.raises(Exception, match="the image processor crashed"):
            pool(b"crash")
        # A fresh pool takes the next image.
        assert pool(b"fine").metadata == {"size": 4}
    finally:
        pool.close()

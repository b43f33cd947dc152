"""`python -m vector_service` serves on its own and stops gracefully on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loom.vector.v1 import vector_pb2, vector_pb2_grpc

from tests.vector.conftest import doc

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"vector_service listening on port (\d+)")


def test_python_m_vector_service_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VECTOR_", "LOOM_", "DATA_DIR", "OPENAI_"))
    }
    env.update(DATA_DIR=str(tmp_path), VECTOR_PORT="0", VECTOR_EMBEDDER="hash")
    env.update(VECTOR_GRACE_SECONDS="2", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vector_service"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    port: list[int] = []
    listening = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        with proc.stderr as stream:
            for line in stream:
                lines.append(line)
                match = LISTENING.search(line)
                if match:
                    port.append(int(match.group(1)))
                    listening.set()
        listening.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert listening.wait(60), "".join(lines)
        assert port, "".join(lines)
        token = (tmp_path / "service.token").read_text().strip()
        assert (tmp_path / "service.token").stat().st_mode & 0o777 == 0o600
        with grpc.insecure_channel(f"127.0.0.1:{port[0]}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            answer = vector_pb2_grpc.VectorServiceStub(channel).UpsertDocuments(
                vector_pb2.UpsertDocumentsRequest(
                    collection=vector_pb2.COLLECTION_PAGES, documents=[doc("d1", "hello")]
                ),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=30,
            )
            assert answer.created_count == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    assert any("vector_service stopped" in line for line in lines), "".join(lines)
    assert (tmp_path / "lancedb" / "page_embeddings.lance").is_dir()

"""The ANN index: built once a collection reaches the threshold, and tenant-filtered recall@10
against exact numpy search stays >= 0.95."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from loom.vector.v1 import vector_pb2

from tests.support import hash_embedder, serving_vector, vector_settings
from tests.vector.conftest import doc, ids, search, stats, upsert

TEAMS = ["team-0", "team-1", "team-2"]
ROWS = 3000
QUERIES_PER_TEAM = 20


def _random_texts(rng: np.random.Generator, n: int) -> list[str]:
    # 30 random tokens: the hash embedder spreads them over ~60 of 384 buckets with random
    # signs, which makes the vectors close to random directions.
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return [" ".join("".join(rng.choice(alphabet, 6)) for _ in range(30)) for _ in range(n)]


def test_ann_index_is_built_and_tenant_filtered_recall_holds(tmp_path: Path) -> None:
    settings = vector_settings(
        tmp_path,
        index_threshold_rows=1000,
        index_partition_rows=500,
        maintenance_seconds=600,
        maintenance_writes=1_000_000,
    )
    embedder = hash_embedder()
    rng = np.random.default_rng(7)
    texts = _random_texts(rng, ROWS)
    teams = [TEAMS[i % len(TEAMS)] for i in range(ROWS)]
    with serving_vector(settings, embedder) as server:
        stub = server.service
        # 250 texts of 209 characters a call: under UpsertDocuments' 64,000 characters.
        for start in range(0, ROWS, 250):
            upsert(
                stub,
                [
                    doc(f"r{i}", texts[i], team=teams[i])
                    for i in range(start, min(ROWS, start + 250))
                ],
            )
        assert stats(stub).vector_index_state == vector_pb2.VECTOR_INDEX_STATE_PENDING
        (optimized,) = stub.Optimize(
            vector_pb2.OptimizeRequest(collections=[vector_pb2.COLLECTION_PAGES])
        ).collections
        assert optimized.vector_index_state == vector_pb2.VECTOR_INDEX_STATE_READY
        vector_index = next(i for i in optimized.indexes if list(i.columns) == ["vector"])
        assert vector_index.index_type == "IVF_SQ"
        assert vector_index.indexed_rows == ROWS

        stored = embedder.inner.embed(texts)
        team_of = np.array(teams)
        recalls, latencies = [], []
        for team in TEAMS:
            rows = np.flatnonzero(team_of == team)
            for _ in range(QUERIES_PER_TEAM):
                query = rng.standard_normal(384).astype(np.float32)
                query /= np.linalg.norm(query)
                similarity = stored[rows] @ query
                exact = {f"r{rows[j]}" for j in np.argsort(-similarity)[:10]}
                started = time.perf_counter()
                found = search(stub, team=team, vector=query.tolist(), limit=10)
                latencies.append(time.perf_counter() - started)
                assert {r.document.scope.team_id for r in found.results} == {team}
                recalls.append(len(exact & set(ids(found))) / 10)
        recall = float(np.mean(recalls))
        p50_ms = 1000 * float(np.median(latencies))
        print(f"recall@10={recall:.3f} p50={p50_ms:.1f}ms over {len(recalls)} queries")
        assert recall >= 0.95


def test_background_maintenance_builds_the_index_at_the_threshold(tmp_path: Path) -> None:
    settings = vector_settings(
        tmp_path,
        index_threshold_rows=300,
        index_partition_rows=100,
        maintenance_writes=100,
        maintenance_seconds=600,
    )
    with serving_vector(settings, hash_embedder()) as server:
        stub = server.service
        upsert(stub, [doc(f"a{i}", f"first batch row {i}") for i in range(200)])
        time.sleep(0.5)
        assert stats(stub).vector_index_state == vector_pb2.VECTOR_INDEX_STATE_NOT_NEEDED
        upsert(stub, [doc(f"b{i}", f"second batch row {i}") for i in range(150)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = stats(stub)
            ready = current.vector_index_state == vector_pb2.VECTOR_INDEX_STATE_READY
            if ready:
                break
            time.sleep(0.1)
        assert current.vector_index_state == vector_pb2.VECTOR_INDEX_STATE_READY
        # Compaction merges only fragments covered by the same indexes, so the rows appended
        # since the last round stay one fragment until the next round: never more than two.
        assert current.fragment_count <= 2
        # New rows after the build are searched at once, and folded in by the next round.
        upsert(stub, [doc("late", "a late arrival about zebras")])
        assert stats(stub).vector_index_state == vector_pb2.VECTOR_INDEX_STATE_PARTIAL
        assert ids(search(stub, "late arrival about zebras"))[0] == "late"

"""Benchmark 3: tenant-filtered semantic Search over gRPC vs the same query in-process.

A real vector_service (vector_service.server.create_server: EdgeInterceptor, service-token
auth, thread pool, the VectorStore with its default index and search settings) runs in its own
process on a temporary LanceDB directory. Its collection is filled through UpsertDocuments
(batches of 1000, service token) with 100 000 documents (20 000 with --quick) spread over 10
teams, then the ANN index is built with the Optimize RPC and checked READY.

The vectors are not made by a language model (embedding 100 000 texts with the local model
would take the whole budget many times over) but drawn with the structure of real embeddings:
384-dimensional unit vectors around 200 topic centres, each team writing about its own subset
of topics. The server is given an embedder that looks each document's vector up by the number
in its text (CorpusEmbedder), so the vectors travel through the real upsert path.

Two results:

1. search_rpc_overhead: p50 latency of the Search RPC (VECTOR mode, query_vector, scope = one
   team, limit 10) over loopback gRPC, against the p50 of the same tenant-filtered query run
   in-process with the lancedb Python API on the same table (same prefilter, cosine, nprobes
   and refine factor as the service). The queries alternate between the two, one by one.
   ratio = in-process p50 / RPC p50; the target 1/1.5 means "RPC p50 <= 1.5x in-process".
2. search_recall: recall@10 of those very RPC results against exact numpy search (cosine,
   brute force over the same team's vectors); target 0.95.

``python -m bench.vector_search [--quick]`` prints both; ``python -m bench --only
vector_search`` runs them with the others.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loom.vector.v1 import vector_pb2, vector_pb2_grpc
from numpy.typing import NDArray

from bench.echo import server_process

SERVICE_TOKEN = "bench-service-token"
DIMENSIONS = 384
TEAMS = 10
TOPICS = 200
TOPICS_PER_TEAM = 40
# A document is its topic's centre plus Gaussian noise of this norm (relative to the centre's
# norm 1), then normalised: cosine to its centre ~0.7, between two documents of one topic ~0.5,
# between unrelated documents ~0 (+-0.05), like sentence embeddings of related and unrelated
# texts.
NOISE = 1.0
UPSERT_BATCH = 1000  # the most UpsertDocuments takes
LIMIT = 10
SEED = 20240611
CORPUS_FILE = "corpus.npy"
TABLE = "page_embeddings"  # COLLECTION_PAGES
RPC_TARGET = 1 / 1.5
RECALL_TARGET = 0.95


@dataclass(frozen=True)
class Sizes:
    rows: int
    queries: int
    warmup: int
    # Below the service's default threshold (50 000 rows) a collection has no ANN index; the
    # quick run lowers it so that the index is still what is measured.
    index_threshold_rows: int | None


FULL = Sizes(rows=100_000, queries=600, warmup=30, index_threshold_rows=None)
QUICK = Sizes(rows=20_000, queries=100, warmup=20, index_threshold_rows=10_000)


# --- the corpus ---------------------------------------------------------------------------


@dataclass
class Corpus:
    vectors: NDArray[np.float32]  # (rows, DIMENSIONS), unit length
    teams: NDArray[np.int64]  # team number of each row
    topics: NDArray[np.int64]  # topic of each row
    centres: NDArray[np.float32]  # (TOPICS, DIMENSIONS), unit length
    team_topics: NDArray[np.int64]  # (TEAMS, TOPICS_PER_TEAM)
    team_weights: NDArray[np.float64]  # (TEAMS, TOPICS_PER_TEAM), each row sums to 1


def _unit(rows: NDArray[np.float32]) -> NDArray[np.float32]:
    out: NDArray[np.float32] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out.astype(np.float32, copy=False)


def _around(
    rng: np.random.Generator, centres: NDArray[np.float32], topics: NDArray[np.int64]
) -> NDArray[np.float32]:
    noise = rng.standard_normal((len(topics), DIMENSIONS), dtype=np.float32)
    noise *= np.float32(NOISE / np.sqrt(DIMENSIONS))
    noise += centres[topics]
    return _unit(noise)


def make_corpus(rows: int, seed: int = SEED) -> Corpus:
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((TOPICS, DIMENSIONS), dtype=np.float32))
    team_topics = np.stack(
        [rng.choice(TOPICS, TOPICS_PER_TEAM, replace=False) for _ in range(TEAMS)]
    ).astype(np.int64)
    # A team writes mostly about a few of its topics (Zipf-like weights).
    zipf = 1.0 / np.arange(1, TOPICS_PER_TEAM + 1)
    team_weights = np.stack([rng.permutation(zipf) / zipf.sum() for _ in range(TEAMS)])
    teams = rng.integers(0, TEAMS, rows).astype(np.int64)
    topics = np.empty(rows, dtype=np.int64)
    for team in range(TEAMS):
        mine = np.flatnonzero(teams == team)
        topics[mine] = rng.choice(team_topics[team], len(mine), p=team_weights[team])
    vectors = _around(rng, centres, topics)
    return Corpus(vectors, teams, topics, centres, team_topics, team_weights)


def make_queries(
    corpus: Corpus, count: int, seed: int = SEED + 1
) -> list[tuple[int, NDArray[np.float32]]]:
    """(team, query vector): a new point of one of the team's topics, like a user's question
    about something the team wrote about. Teams in turn."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        team = i % TEAMS
        topic = rng.choice(corpus.team_topics[team], p=corpus.team_weights[team])
        out.append((team, _around(rng, corpus.centres, np.array([topic]))[0]))
    return out


def team_id(team: int) -> str:
    return f"team-{team}"


def doc_text(row: int, topic: int) -> str:
    return f"document {row} about topic {topic}"


class CorpusEmbedder:
    """What the server embeds with here: a document's vector is looked up by the row number
    in its text ("document 123 about topic 7"), from the corpus file the benchmark wrote."""

    name = "bench"
    model = "bench/clustered-384"
    dimensions = DIMENSIONS

    def __init__(self, path: Path) -> None:
        self.vectors: NDArray[np.float32] = np.load(path, mmap_mode="r")

    def embed(self, texts: Any) -> NDArray[np.float32]:
        rows = [int(text.split()[1]) for text in texts]
        return np.ascontiguousarray(self.vectors[rows], dtype=np.float32)


# --- the server, in its own process ---------------------------------------------------------


def serve_vector(data_dir: str, threshold: int | None, ready: Any, stop: Any) -> None:
    try:
        from vector_service.server import create_server
        from vector_service.settings import VectorSettings

        overrides: dict[str, Any] = {}
        if threshold is not None:
            overrides["index_threshold_rows"] = threshold
        settings = VectorSettings(
            data_dir=Path(data_dir),
            lancedb_uri=str(Path(data_dir) / "lancedb"),
            embedder="hash",  # replaced by CorpusEmbedder below
            host="127.0.0.1",
            port=0,
            service_token=SERVICE_TOKEN,
            content_address="127.0.0.1:9",  # tenant keys are not used here
            # The load is one bulk import followed by one Optimize call; background rounds
            # in between would only make the load slower.
            maintenance_writes=1_000_000_000,
            maintenance_seconds=1e9,
            log_level="WARNING",
            **overrides,
        )
        running = create_server(settings, embedder=CorpusEmbedder(Path(data_dir) / CORPUS_FILE))
        running.server.start()
    except Exception as exc:
        ready.put({"error": repr(exc)})
        return
    ready.put(
        {
            "port": running.port,
            "uri": settings.database_uri,
            "nprobes": settings.search_nprobes,
            "refine_factor": settings.search_refine_factor,
            "partition_rows": settings.index_partition_rows,
            "threshold": settings.index_threshold_rows,
            "workers": settings.workers,
        }
    )
    stop.wait()
    running.stop(1)


# --- the measurements -----------------------------------------------------------------------


def _load(stub: Any, metadata: Any, corpus: Corpus) -> float:
    """Upserts every row through the RPC; returns the seconds it took."""
    started = time.perf_counter()
    rows = len(corpus.vectors)
    for start in range(0, rows, UPSERT_BATCH):
        docs = [
            vector_pb2.Document(
                id=f"d{i}",
                scope=vector_pb2.Scope(
                    team_id=team_id(int(corpus.teams[i])),
                    site_id=f"site-{corpus.teams[i]}-{i % 2}",
                    environment_id="prod",
                ),
                source_id=f"page-{i}",
                text=doc_text(i, int(corpus.topics[i])),
            )
            for i in range(start, min(rows, start + UPSERT_BATCH))
        ]
        answer = stub.UpsertDocuments(
            vector_pb2.UpsertDocumentsRequest(
                collection=vector_pb2.COLLECTION_PAGES, documents=docs
            ),
            metadata=metadata,
            timeout=120,
        )
        if answer.created_count != len(docs):
            raise RuntimeError(f"UpsertDocuments created {answer.created_count} of {len(docs)}")
    return time.perf_counter() - started


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def run(quick: bool) -> list[dict[str, Any]]:
    import lancedb

    from vector_service.store import Scope
    from vector_service.store.rows import DISTANCE_COLUMN, ID_COLUMN, RESULT_COLUMNS, VECTOR_COLUMN

    sizes = QUICK if quick else FULL
    corpus = make_corpus(sizes.rows)
    queries = make_queries(corpus, sizes.warmup + sizes.queries)
    metadata = (("authorization", f"Bearer {SERVICE_TOKEN}"),)
    with tempfile.TemporaryDirectory(prefix="loom-bench-vector-") as tmp:
        np.save(Path(tmp) / CORPUS_FILE, corpus.vectors)
        with (
            server_process(serve_vector, tmp, sizes.index_threshold_rows) as server,
            grpc.insecure_channel(server.address) as channel,
        ):
            info = server.info
            stub = vector_pb2_grpc.VectorServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            load_seconds = _load(stub, metadata, corpus)

            started = time.perf_counter()
            stub.Optimize(
                vector_pb2.OptimizeRequest(collections=[vector_pb2.COLLECTION_PAGES]),
                metadata=metadata,
                timeout=600,
            )
            optimize_seconds = time.perf_counter() - started
            stats = stub.GetCollectionStats(
                vector_pb2.GetCollectionStatsRequest(collection=vector_pb2.COLLECTION_PAGES),
                metadata=metadata,
                timeout=30,
            ).stats
            if stats.vector_index_state != vector_pb2.VECTOR_INDEX_STATE_READY:
                state = vector_pb2.VectorIndexState.Name(stats.vector_index_state)
                raise RuntimeError(f"the ANN index is {state} after Optimize, not READY")
            index = next(i for i in stats.indexes if list(i.columns) == [VECTOR_COLUMN])
            if index.indexed_rows != sizes.rows or stats.row_count != sizes.rows:
                raise RuntimeError(f"index covers {index.indexed_rows} of {stats.row_count} rows")
            partitions = -(-sizes.rows // info["partition_rows"])

            table: Any = lancedb.connect(info["uri"]).open_table(TABLE)
            nprobes, refine = int(info["nprobes"]), int(info["refine_factor"])

            def rpc(team: int, vector: NDArray[np.float32]) -> list[str]:
                answer = stub.Search(
                    vector_pb2.SearchRequest(
                        collections=[vector_pb2.COLLECTION_PAGES],
                        scope=vector_pb2.Scope(team_id=team_id(team)),
                        query_vector=vector.tolist(),
                        mode=vector_pb2.SEARCH_MODE_VECTOR,
                        limit=LIMIT,
                    ),
                    metadata=metadata,
                    timeout=30,
                )
                return [r.document.id for r in answer.results]

            def local(team: int, vector: NDArray[np.float32], limit: int = LIMIT) -> Any:
                # The query the store's vector_search makes (same filter, columns, distance,
                # nprobes, refine factor), asked for the 10 results the caller wants.
                return (
                    table.search(vector, vector_column_name=VECTOR_COLUMN, query_type="vector")
                    .distance_type("cosine")
                    .where(Scope(team_id(team)).sql(), prefilter=True)
                    .select([*RESULT_COLUMNS, DISTANCE_COLUMN])
                    .limit(limit)
                    .minimum_nprobes(nprobes)
                    .maximum_nprobes(0)
                    .refine_factor(refine)
                    .to_arrow()
                )

            def ping() -> None:
                health.Check(health_pb2.HealthCheckRequest(), timeout=10)

            for team, vector in queries[: sizes.warmup]:
                rpc(team, vector)
                local(team, vector)
                local(team, vector, 2 * LIMIT).to_pylist()
                ping()

            rpc_ms: list[float] = []
            local_ms: list[float] = []
            local20_ms: list[float] = []
            ping_ms: list[float] = []
            found: list[list[str]] = []
            agree: list[float] = []
            for n, (team, vector) in enumerate(queries[sizes.warmup :]):
                # Alternate which goes first, so that drift in the machine hits both alike.
                order = ("rpc", "local") if n % 2 == 0 else ("local", "rpc")
                for which in order:
                    t0 = time.perf_counter()
                    if which == "rpc":
                        ids = rpc(team, vector)
                        rpc_ms.append(1000 * (time.perf_counter() - t0))
                    else:
                        rows = local(team, vector)
                        local_ms.append(1000 * (time.perf_counter() - t0))
                found.append(ids)
                agree.append(len(set(ids) & set(rows.column(ID_COLUMN).to_pylist())) / LIMIT)
                # Where the RPC's time goes: the service asks LanceDB for 2 * limit rows (the
                # fusion depth) as Python dicts; a health check is the gRPC round-trip floor.
                t0 = time.perf_counter()
                local(team, vector, 2 * LIMIT).to_pylist()
                local20_ms.append(1000 * (time.perf_counter() - t0))
                t0 = time.perf_counter()
                ping()
                ping_ms.append(1000 * (time.perf_counter() - t0))

    # Exact search: cosine = dot product of unit vectors, over the team's rows only.
    recalls: list[float] = []
    team_rows = {t: np.flatnonzero(corpus.teams == t) for t in range(TEAMS)}
    for (team, vector), ids in zip(queries[sizes.warmup :], found, strict=True):
        rows_of_team = team_rows[team]
        similarity = corpus.vectors[rows_of_team] @ vector
        exact = {f"d{rows_of_team[j]}" for j in np.argsort(-similarity)[:LIMIT]}
        recalls.append(len(exact & set(ids)) / LIMIT)

    rpc_p50, local_p50 = statistics.median(rpc_ms), statistics.median(local_ms)
    local20_p50, ping_p50 = statistics.median(local20_ms), statistics.median(ping_ms)
    recall = float(np.mean(recalls))
    mode = (
        f"--quick: {sizes.rows:,} rows (ANN threshold lowered to {sizes.index_threshold_rows:,}), "
        if quick
        else f"{sizes.rows:,} rows, "
    )
    setup = (
        f"{mode}{DIMENSIONS} dims, {TEAMS} teams (~{sizes.rows // TEAMS:,} rows each), unit "
        f"vectors around {TOPICS} topic centres ({TOPICS_PER_TEAM} per team); loaded by "
        f"UpsertDocuments x{UPSERT_BATCH} in {load_seconds:.0f} s "
        f"({sizes.rows / load_seconds:,.0f} docs/s), Optimize {optimize_seconds:.0f} s -> "
        f"IVF_SQ READY, {partitions} partitions, nprobes >= {nprobes}, refine x{refine}"
    )
    probes_all = nprobes >= partitions
    details = {
        "rows": sizes.rows,
        "queries": sizes.queries,
        "partitions": partitions,
        "nprobes": nprobes,
        "refine_factor": refine,
        "every_partition_probed": probes_all,
        "load_seconds": round(load_seconds, 1),
        "optimize_seconds": round(optimize_seconds, 1),
        "rpc_ms": {
            "p50": round(rpc_p50, 2),
            "p90": round(_percentile(rpc_ms, 90), 2),
            "p99": round(_percentile(rpc_ms, 99), 2),
        },
        "in_process_ms": {
            "p50": round(local_p50, 2),
            "p90": round(_percentile(local_ms, 90), 2),
            "p99": round(_percentile(local_ms, 99), 2),
        },
        "in_process_service_query_p50_ms": round(local20_p50, 2),
        "health_check_rpc_p50_ms": round(ping_p50, 2),
        "rpc_vs_in_process_overlap_at_10": round(float(np.mean(agree)), 4),
        "server_workers": info["workers"],
    }
    latency = {
        "name": "vector_search",
        "title": f"Tenant-filtered Search RPC p50 <= 1.5x in-process LanceDB ({sizes.rows:,} x "
        f"{DIMENSIONS})",
        "ours": round(rpc_p50, 2),
        "baseline": round(local_p50, 2),
        "unit": "ms p50",
        "ratio": round(local_p50 / rpc_p50, 3),
        "target": round(RPC_TARGET, 3),
        "notes": (
            f"ratio = in-process p50 / RPC p50 (RPC {rpc_p50 / local_p50:.2f}x in-process; "
            f"target 1/1.5); {setup}; {sizes.queries} VECTOR queries with query_vector, scope "
            f"= one team, limit {LIMIT}, alternating RPC / in-process one by one on loopback; "
            f"in-process = lancedb table.search with the service's prefilter, cosine, nprobes "
            f"and refine, limit {LIMIT}, to_arrow. Where the RPC's time goes (p50): the "
            f"service's own LanceDB query (limit {2 * LIMIT} for fusion, to Python rows) "
            f"{local20_p50:.1f} ms in-process, a Health/Check round trip {ping_p50:.2f} ms; "
            f"p90 RPC {_percentile(rpc_ms, 90):.1f} ms, in-process "
            f"{_percentile(local_ms, 90):.1f} ms"
        ),
        "details": details,
    }
    recall_result = {
        "name": "vector_search_recall",
        "title": f"Tenant-filtered Search recall@10 vs exact numpy ({sizes.rows:,} x {DIMENSIONS})",
        "ours": round(recall, 4),
        "baseline": 1.0,
        "unit": "recall@10",
        "ratio": round(recall, 4),
        "target": RECALL_TARGET,
        "notes": (
            f"the {sizes.queries} Search RPC answers above against exact cosine search in "
            f"numpy over the same team's vectors (baseline 1.0 = exact); worst query "
            f"{min(recalls):.1f}; {setup}"
            + (
                f"; nprobes {nprobes} >= {partitions} partitions, so every partition is probed: "
                "recall is lost only to the 8-bit scalar quantization, which the re-ranking "
                "with full vectors repairs"
                if probes_all
                else ""
            )
        ),
        "details": {"recalls_below_1": sum(1 for r in recalls if r < 1.0), **details},
    }
    return [latency, recall_result]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20 000 rows instead of 100 000")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()

"""Benchmark 3: tenant-filtered semantic Search over gRPC against an empty call on the same
server, at 100 000 rows in three layouts: 100 teams of 1 000, 10 of 10 000, 1 of 100 000.

A real vector_service (vector_service.server.create_server: EdgeInterceptor, service-token
auth, thread pool, the VectorStore and search tier with their default settings) runs in its
own process on a temporary LanceDB directory, one per layout. The collection's table is written
before the server starts (`fill`: the store's own table creation and row builder; through
UpsertDocuments it took 12-15 s per layout, and the load is not what is measured), then the
Optimize RPC compacts it and builds the ANN index (it is over VECTOR_INDEX_THRESHOLD_ROWS).

The vectors are not made by a language model (embedding 100 000 texts with the local model
would take the whole budget many times over) but drawn with the structure of real embeddings:
384-dimensional unit vectors around 200 topic centres, each team writing about its own subset
of topics. The server is given an embedder that looks each document's vector up by the number
in its text (CorpusEmbedder), as the upserts measured on 10 x 10k need; any other text (a
query_text) is embedded by the real local model (MiniLM), so query embedding costs what it
costs in production.

Per layout: the first Search of cold teams (their segments not in memory: LanceDB answers, and
the tier loads them after), then, all teams resident (a 100 000-row team is over
VECTOR_TIER_EXACT_MAX_ROWS: the tier holds it as an in-memory IVF), Search RPCs (VECTOR,
query_vector, one team's scope, limit 10) alternating one by one with grpc.health.v1
Health/Check, the empty unary call, on the same channel. ratio = Check p50 / Search p50: the
target 0.5 means "Search p50 within 2x of an empty call". Recall@10 of the very RPC answers
against exact numpy search over the team's vectors; server memory (RSS) before and after the
teams were loaded. On 10 x 10k also FULL_TEXT and HYBRID, and query_text searches with a new
text each time (cold: the model runs) and with a repeated text (warm: the query cache). On
1 x 100k, the alternative to the tier's IVF: the service's LanceDB query in-process at
several nprobes (recall and p50). Last, two servers alike but for the BLAS threads (one, or
numpy's default), searched from one client and from four at once.

``python -m bench.vector_search [--quick]`` prints the results; ``python -m bench --only
vector_search`` runs them with the others.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
TOPICS = 200
TOPICS_PER_TEAM = 40
# A document is its topic's centre plus Gaussian noise of this norm (relative to the centre's
# norm 1), then normalised: cosine to its centre ~0.7, between two documents of one topic ~0.5,
# between unrelated documents ~0 (+-0.05), like sentence embeddings of related and unrelated
# texts.
NOISE = 1.0
FILL_BATCH = 20_000
UPSERT_BATCH = 100  # an outbox delivery of a few pages' sections
LIMIT = 10
SEED = 20240611
CORPUS_FILE = "corpus.npy"
TABLE = "page_embeddings"  # COLLECTION_PAGES
LATENCY_TARGET = 0.5  # Search p50 within 2x of an empty call
P99_TARGET = 0.25  # ... p99 within 4x
EXACT_RECALL_TARGET = 1.0
ANN_RECALL_TARGET = 0.95
COLD_TARGET = 0.1  # the first search of a cold 10k team within 10x of a warm one
NPROBES_TRIED = (4, 8, 12, 25)
QUERY_WORDS = tuple(
    [
        "price",
        "plan",
        "team",
        "site",
        "page",
        "blog",
        "photo",
        "shop",
        "cart",
        "order",
        "help",
        "login",
        "about",
        "news",
    ]
)


@dataclass(frozen=True)
class Layout:
    name: str
    teams: int
    rows: int
    queries: int
    cold_teams: int
    extras: bool = False  # modes, query_text, BLAS threads
    nprobes_sweep: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def per_team(self) -> int:
        return self.rows // self.teams


FULL = [
    Layout("100x1k", 100, 100_000, 300, 6),
    Layout("10x10k", 10, 100_000, 300, 6, extras=True),
    Layout("1x100k", 1, 100_000, 300, 1, nprobes_sweep=True),
]
# Smaller tables; the last layout lowers the exact tier's limit and the ANN threshold so that
# its one team is still answered by the ANN index.
QUICK = [
    Layout("20x1k", 20, 20_000, 100, 5, overrides={"index_threshold_rows": 10_000}),
    Layout("4x5k", 4, 20_000, 100, 4, extras=True, overrides={"index_threshold_rows": 10_000}),
    Layout(
        "1x20k",
        1,
        20_000,
        100,
        1,
        nprobes_sweep=True,
        overrides={"tier_exact_max_rows": 10_000, "index_threshold_rows": 10_000},
    ),
]


# --- the corpus ---------------------------------------------------------------------------


@dataclass
class Corpus:
    vectors: NDArray[np.float32]  # (rows, DIMENSIONS), unit length
    teams: NDArray[np.int64]  # team number of each row
    topics: NDArray[np.int64]  # topic of each row
    centres: NDArray[np.float32]  # (TOPICS, DIMENSIONS), unit length
    team_topics: NDArray[np.int64]  # (teams, TOPICS_PER_TEAM)
    team_weights: NDArray[np.float64]  # (teams, TOPICS_PER_TEAM), each row sums to 1


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


def make_corpus(rows: int, teams: int, seed: int = SEED) -> Corpus:
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((TOPICS, DIMENSIONS), dtype=np.float32))
    team_topics = np.stack(
        [rng.choice(TOPICS, TOPICS_PER_TEAM, replace=False) for _ in range(teams)]
    ).astype(np.int64)
    # A team writes mostly about a few of its topics (Zipf-like weights).
    zipf = 1.0 / np.arange(1, TOPICS_PER_TEAM + 1)
    team_weights = np.stack([rng.permutation(zipf) / zipf.sum() for _ in range(teams)])
    # Teams of equal size, rows interleaved (every team's rows are spread over the table).
    team_of = (np.arange(rows) % teams).astype(np.int64)
    topics = np.empty(rows, dtype=np.int64)
    for team in range(teams):
        mine = np.flatnonzero(team_of == team)
        topics[mine] = rng.choice(team_topics[team], len(mine), p=team_weights[team])
    vectors = _around(rng, centres, topics)
    return Corpus(vectors, team_of, topics, centres, team_topics, team_weights)


def make_queries(
    corpus: Corpus, count: int, seed: int = SEED + 1
) -> list[tuple[int, NDArray[np.float32]]]:
    """(team, query vector): a new point of one of the team's topics, like a user's question
    about something the team wrote about. Teams drawn at random."""
    rng = np.random.default_rng(seed)
    teams = len(corpus.team_topics)
    out = []
    for _ in range(count):
        team = int(rng.integers(teams))
        topic = rng.choice(corpus.team_topics[team], p=corpus.team_weights[team])
        out.append((team, _around(rng, corpus.centres, np.array([topic]))[0]))
    return out


def team_id(team: int) -> str:
    return f"team-{team}"


def doc_text(row: int, topic: int) -> str:
    return f"document {row} about topic {topic}"


class CorpusEmbedder:
    """What the server embeds with here: a document's vector is looked up by the row number
    in its text ("document 123 about topic 7"), from the corpus file the benchmark wrote; any
    other text is embedded by the local model (loaded on first use)."""

    name = "bench"
    model = "bench/clustered-384"
    dimensions = DIMENSIONS

    def __init__(self, path: Path) -> None:
        self.vectors: NDArray[np.float32] = np.load(path, mmap_mode="r")
        self._local: Any = None
        self._lock = threading.Lock()

    def load_text_model(self) -> None:
        from vector_service.embeddings import EmbedderConfig, create_embedder

        with self._lock:
            if self._local is None:
                local = create_embedder(EmbedderConfig(provider="local"))
                local.load()  # type: ignore[attr-defined]
                self._local = local

    def embed(self, texts: Any) -> NDArray[np.float32]:
        if texts and all(text.startswith("document ") for text in texts):
            rows = [int(text.split()[1]) for text in texts]
            return np.ascontiguousarray(self.vectors[rows], dtype=np.float32)
        self.load_text_model()
        out: NDArray[np.float32] = self._local.embed(texts)
        return out


# --- the server, in its own process ---------------------------------------------------------


def serve_vector(data_dir: str, overrides: dict[str, Any], ready: Any, stop: Any) -> None:
    """The server, on the directory `fill` wrote; `overrides` are settings, and "text_model"
    (true: load the local model at start, for query_text searches)."""
    overrides = dict(overrides)
    text_model = bool(overrides.pop("text_model", False))
    try:
        from vector_service.server import create_server
        from vector_service.settings import VectorSettings

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
        embedder = CorpusEmbedder(Path(data_dir) / CORPUS_FILE)
        if text_model:
            embedder.load_text_model()
        running = create_server(settings, embedder=embedder)
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
            "exact_max_rows": settings.tier_exact_max_rows,
            "tier_partition_rows": settings.tier_partition_rows,
            "workers": settings.workers,
        }
    )
    stop.wait()
    running.stop(1)


# --- helpers ----------------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def _ms(started: float) -> float:
    return 1000 * (time.perf_counter() - started)


class Client:
    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = vector_pb2_grpc.VectorServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.metadata = (("authorization", f"Bearer {SERVICE_TOKEN}"),)

    def search(
        self,
        team: int,
        vector: NDArray[np.float32] | None = None,
        text: str = "",
        mode: int = vector_pb2.SEARCH_MODE_VECTOR,
    ) -> list[str]:
        answer = self.stub.Search(
            vector_pb2.SearchRequest(
                collections=[vector_pb2.COLLECTION_PAGES],
                scope=vector_pb2.Scope(team_id=team_id(team)),
                query_vector=vector.tolist() if vector is not None else [],
                query_text=text,
                mode=mode,  # type: ignore[arg-type]
                limit=LIMIT,
            ),
            metadata=self.metadata,
            timeout=60,
        )
        return [r.document.id for r in answer.results]

    def ping(self) -> None:
        self.health.Check(health_pb2.HealthCheckRequest(), timeout=10)

    def tier(self) -> Any:
        return self.stats().search_tier

    def stats(self) -> Any:
        return self.stub.GetCollectionStats(
            vector_pb2.GetCollectionStatsRequest(collection=vector_pb2.COLLECTION_PAGES),
            metadata=self.metadata,
            timeout=30,
        ).stats

    def until_loaded(self, timeout: float = 120) -> Any:
        """Waits until no load is in flight (a search that missed registered its load before
        it answered): the teams searched so far are resident, or found too large."""
        deadline = time.monotonic() + timeout
        while True:
            tier = self.tier()
            if tier.loading == 0 or time.monotonic() > deadline:
                return tier
            time.sleep(0.02)


def fill(data_dir: str, corpus: Corpus) -> float:
    """Writes the corpus into the collection's table before the server starts (through the
    store's own table creation and row builder, without the RPC: the load is not what is
    measured, and through UpsertDocuments it took 12-15 s per 100 000 rows). Returns seconds."""
    from vector_service.store import Collection, VectorSpace
    from vector_service.store.rows import Document, rows_table
    from vector_service.store.tables import Tables

    started = time.perf_counter()
    space = VectorSpace(CorpusEmbedder.name, CorpusEmbedder.model, DIMENSIONS)
    tables = Tables(str(Path(data_dir) / "lancedb"), space)
    state = tables.states[Collection.PAGES]
    state.generation = 1
    handle = state.active = tables.create(Collection.PAGES, 1, space)
    tables.record(state)
    now = datetime.now(UTC)
    rows = len(corpus.vectors)
    for start in range(0, rows, FILL_BATCH):
        docs = [
            Document(
                id=f"d{i}",
                team_id=team_id(int(corpus.teams[i])),
                site_id=f"site-{corpus.teams[i]}-{i % 2}",
                environment_id="prod",
                source_id=f"page-{i}",
                text=doc_text(i, int(corpus.topics[i])),
            )
            for i in range(start, min(rows, start + FILL_BATCH))
        ]
        vectors = corpus.vectors[start : start + len(docs)]
        handle.table.add(rows_table(handle.table.schema, docs, vectors, space.model, now))
    return time.perf_counter() - started


def _ivf_partitions(layout: Layout, info: dict[str, Any]) -> int:
    if layout.per_team <= info["exact_max_rows"]:
        return 0
    return -(-layout.per_team // info["tier_partition_rows"])


def _ivf_probes(layout: Layout, info: dict[str, Any]) -> int:
    from vector_service.tier.ivf import MIN_PROBES, PROBE_SHARE

    partitions = _ivf_partitions(layout, info)
    return min(partitions, max(MIN_PROBES, math.ceil(partitions * PROBE_SHARE)))


@dataclass
class Exact:
    """Exact cosine search over each team's rows (their vectors copied out once: copying a
    100 000-row team per query took longer than everything else)."""

    rows: dict[int, NDArray[np.int64]]
    vectors: dict[int, NDArray[np.float32]]

    @classmethod
    def of(cls, corpus: Corpus) -> Exact:
        rows = {int(t): np.flatnonzero(corpus.teams == t) for t in np.unique(corpus.teams)}
        return cls(rows, {t: np.ascontiguousarray(corpus.vectors[r]) for t, r in rows.items()})

    def top(self, team: int, vector: NDArray[np.float32], k: int = LIMIT) -> set[str]:
        similarity = self.vectors[team] @ vector
        if len(similarity) > k:
            best = np.argpartition(-similarity, k - 1)[:k]
        else:
            best = np.arange(len(similarity))
        return {f"d{self.rows[team][j]}" for j in best}


# --- one layout -------------------------------------------------------------------------------


def run_layout(layout: Layout) -> dict[str, Any]:
    corpus = make_corpus(layout.rows, layout.teams)
    exact = Exact.of(corpus)
    warmup = 30
    queries = make_queries(corpus, warmup + layout.queries + layout.cold_teams)
    out: dict[str, Any] = {"layout": layout.name, "teams": layout.teams, "rows": layout.rows}
    phases: dict[str, float] = {}
    clock = [time.perf_counter()]

    def phase(name: str) -> None:
        now = time.perf_counter()
        phases[name] = round(now - clock[0], 1)
        clock[0] = now

    out["phase_seconds"] = phases
    with tempfile.TemporaryDirectory(prefix="loom-bench-vector-") as tmp:
        np.save(Path(tmp) / CORPUS_FILE, corpus.vectors)
        out["load_seconds"] = round(fill(tmp, corpus), 1)
        phase("corpus and table")
        overrides = {**layout.overrides, "text_model": layout.extras}
        with (
            server_process(serve_vector, tmp, overrides) as server,
            grpc.insecure_channel(server.address) as channel,
        ):
            info = server.info
            client = Client(channel)
            started = time.perf_counter()
            client.stub.Optimize(
                vector_pb2.OptimizeRequest(collections=[vector_pb2.COLLECTION_PAGES]),
                metadata=client.metadata,
                timeout=600,
            )
            out["optimize_seconds"] = round(time.perf_counter() - started, 1)
            stats = client.stats()
            out["vector_index"] = vector_pb2.VectorIndexState.Name(stats.vector_index_state)
            out["partitions"] = -(-layout.rows // info["partition_rows"])
            out["nprobes"] = info["nprobes"]
            out["exact_max_rows"] = info["exact_max_rows"]
            out["refine_factor"] = info["refine_factor"]
            for _ in range(20):
                client.ping()
            rss_before = _rss_mb(server.pid)
            phase("server start, Optimize")

            # Cold: the first search of teams the tier does not hold (LanceDB answers it, and
            # the loader starts on the team at once), each followed by a wait for its load.
            cold_ms: list[float] = []
            cold_recalls: list[float] = []
            cold_teams = list(range(layout.cold_teams))
            for team, (_, vector) in zip(cold_teams, queries[-layout.cold_teams :], strict=True):
                t0 = time.perf_counter()
                found = client.search(team, vector)
                cold_ms.append(_ms(t0))
                expected = exact.top(team, vector)
                cold_recalls.append(len(expected & set(found)) / LIMIT)
                client.until_loaded(timeout=30)
            for team in range(layout.teams):
                client.search(team, queries[team % len(queries)][1])
            tier = client.until_loaded()
            rss_after = _rss_mb(server.pid)
            phase("cold searches, loads")
            out["tier"] = {
                "teams": tier.teams,
                "partitions": _ivf_partitions(layout, info),
                "probes": _ivf_probes(layout, info),
                "rows": tier.rows,
                "resident_mb": round(tier.resident_bytes / 1e6, 1),
                "loads": tier.loads,
            }
            out["rss_mb"] = {"before_tier": round(rss_before), "after_tier": round(rss_after)}
            if tier.rows:
                per_100k = (rss_after - rss_before) * 100_000 / tier.rows
                out["rss_mb_per_100k_vectors"] = round(per_100k)
                out["tier_mb_per_100k_vectors"] = round(tier.resident_bytes / 1e6 * 1e5 / tier.rows)

            for team, vector in queries[:warmup]:
                client.search(team, vector)
                client.ping()
            search_ms: list[float] = []
            ping_ms: list[float] = []
            answers: list[list[str]] = []
            measured = queries[warmup : warmup + layout.queries]
            for n, (team, vector) in enumerate(measured):
                for which in ("search", "ping") if n % 2 == 0 else ("ping", "search"):
                    t0 = time.perf_counter()
                    if which == "search":
                        answers.append(client.search(team, vector))
                        search_ms.append(_ms(t0))
                    else:
                        client.ping()
                        ping_ms.append(_ms(t0))
            # Afterwards: the exact search's numpy work would evict the server's matrices from
            # the shared cache between the calls.
            recalls = [
                len(exact.top(team, vector) & set(found)) / LIMIT
                for (team, vector), found in zip(measured, answers, strict=True)
            ]
            hits = client.tier()
            phase("measured searches")
            out["search_ms"] = {
                "p50": round(statistics.median(search_ms), 3),
                "p99": round(_p(search_ms, 99), 3),
            }
            out["ping_ms"] = {
                "p50": round(statistics.median(ping_ms), 3),
                "p99": round(_p(ping_ms, 99), 3),
            }
            out["cold_ms"] = {
                "p50": round(statistics.median(cold_ms), 2),
                "max": round(max(cold_ms), 2),
                "teams": len(cold_ms),
                "recall": round(float(np.mean(cold_recalls)), 4),
            }
            out["recall"] = round(float(np.mean(recalls)), 4)
            out["worst_recall"] = min(recalls)
            out["answered_from_memory"] = hits.hits > 0 and hits.teams == layout.teams
            if layout.extras:
                out["extras"] = _extras(client, corpus, queries, layout)
                phase("extras")
            if layout.nprobes_sweep:
                out["nprobes_sweep"] = _nprobes_sweep(info, corpus, queries, exact)
                phase("nprobes sweep")
    return out


def _extras(
    client: Client, corpus: Corpus, queries: list[tuple[int, Any]], layout: Layout
) -> dict[str, Any]:
    """FULL_TEXT, HYBRID and query_text searches (cold and warm) on the loaded layout."""
    out: dict[str, Any] = {}
    rng = np.random.default_rng(SEED + 7)
    modes = {
        "full_text": vector_pb2.SEARCH_MODE_FULL_TEXT,
        "hybrid": vector_pb2.SEARCH_MODE_HYBRID,
    }
    for name, mode in modes.items():
        times: list[float] = []
        for n in range(60):
            team = n % layout.teams
            topic = int(rng.choice(corpus.team_topics[team]))
            text = f"topic {topic}"  # repeated texts: HYBRID's query vector comes from the cache
            t0 = time.perf_counter()
            client.search(team, text=text, mode=mode)
            if n >= 10:
                times.append(_ms(t0))
        out[f"{name}_p50_ms"] = round(statistics.median(times), 2)
    cold: list[float] = []
    warm: list[float] = []
    words = QUERY_WORDS
    for n in range(40):
        team = n % layout.teams
        text = f"question {n}: " + " ".join(rng.choice(words, 6))  # never asked before
        t0 = time.perf_counter()
        client.search(team, text=text)
        cold.append(_ms(t0))
        t0 = time.perf_counter()
        client.search(team, text=text)
        warm.append(_ms(t0))
    out["query_text_cold_p50_ms"] = round(statistics.median(cold), 2)
    out["query_text_warm_p50_ms"] = round(statistics.median(warm), 2)
    # Keeping the tier in step: UpsertDocuments of 100 new documents into a resident team
    # (their texts are stored ones: no embedding), and the tier's own part of it.
    upserts: list[float] = []
    for n in range(10):
        rows = [
            int(r) for r in np.flatnonzero(corpus.teams == 0)[n * UPSERT_BATCH :][:UPSERT_BATCH]
        ]
        docs = [
            vector_pb2.Document(
                id=f"u{n}-{row}",
                scope=vector_pb2.Scope(
                    team_id=team_id(0), site_id="site-new", environment_id="prod"
                ),
                source_id=f"page-{row}",
                text=doc_text(row, int(corpus.topics[row])),
            )
            for row in rows
        ]
        t0 = time.perf_counter()
        client.stub.UpsertDocuments(
            vector_pb2.UpsertDocumentsRequest(
                collection=vector_pb2.COLLECTION_PAGES, documents=docs
            ),
            metadata=client.metadata,
            timeout=60,
        )
        upserts.append(_ms(t0))
    out["upsert_100_p50_ms"] = round(statistics.median(upserts), 1)
    out["tier_upsert_100_p50_ms"] = _tier_upsert_cost(corpus, layout.per_team)
    return out


def _tier_upsert_cost(corpus: Corpus, per_team: int) -> float:
    """What the tier adds to an upsert of 100 rows into a resident team of `per_team`: its
    Segment.upsert on the rows the store wrote (in this process)."""
    from vector_service.store import VectorSpace
    from vector_service.store.rows import Document, rows_table
    from vector_service.store.tables import table_schema
    from vector_service.tier.segment import Segment

    schema = table_schema(VectorSpace(CorpusEmbedder.name, CorpusEmbedder.model, DIMENSIONS))
    now = datetime.now(UTC)

    def table(ids: range, prefix: str) -> Any:
        docs = [Document(f"{prefix}{i}", "t", "s", "prod", f"p{i}", doc_text(i, 0)) for i in ids]
        return rows_table(schema, docs, corpus.vectors[ids.start : ids.stop], "m", now)

    segment = Segment("t", DIMENSIONS, table(range(per_team), "d"), per_team * 2)
    times = []
    for n in range(20):
        batch = table(range(n * UPSERT_BATCH, (n + 1) * UPSERT_BATCH), f"new{n}-")
        t0 = time.perf_counter()
        segment.upsert(batch, [])
        times.append(_ms(t0))
    return round(statistics.median(times), 2)


def serve_unpinned(data_dir: str, overrides: dict[str, Any], ready: Any, stop: Any) -> None:
    """serve_vector with numpy's default BLAS threads (the server's pin to one thread off):
    the alternative the pin was chosen against."""
    import vector_service.server

    vector_service.server.one_blas_thread = lambda: lambda: None
    serve_vector(data_dir, overrides, ready, stop)


def _concurrent(
    client: Client, queries: list[tuple[int, Any]], clients: int
) -> tuple[float, float]:
    """200 searches from `clients` threads at once: p50 ms and calls/s."""
    times: list[float] = []
    lock = threading.Lock()

    def loop(i: int) -> None:
        mine = []
        for team, vector in queries[i::clients][: 200 // clients]:
            t0 = time.perf_counter()
            client.search(team, vector)
            mine.append(_ms(t0))
        with lock:
            times.extend(mine)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    rate = len(times) / (time.perf_counter() - started)
    return round(statistics.median(times), 3), round(rate)


def blas_threads(quick: bool) -> dict[str, Any]:
    """The same searches against a server with one BLAS thread and one with numpy's default,
    from one client and from four at once."""
    teams, per_team = (2, 5_000) if quick else (2, 10_000)
    corpus = make_corpus(teams * per_team, teams, seed=SEED + 3)
    queries = make_queries(corpus, 330, seed=SEED + 4)
    out: dict[str, Any] = {"teams": teams, "per_team": per_team}
    for name, target in (("one_thread", serve_vector), ("default_threads", serve_unpinned)):
        with tempfile.TemporaryDirectory(prefix="loom-bench-blas-") as tmp:
            np.save(Path(tmp) / CORPUS_FILE, corpus.vectors)
            fill(tmp, corpus)
            with (
                server_process(target, tmp, {}) as server,
                grpc.insecure_channel(server.address) as channel,
            ):
                client = Client(channel)
                for team in range(teams):
                    client.search(team, queries[team][1])
                client.until_loaded()
                for team, vector in queries[:30]:
                    client.search(team, vector)

                single, single_rate = _concurrent(client, queries[30:], 1)
                four, four_rate = _concurrent(client, queries[30:], 4)
                out[name] = {
                    "one_client_p50_ms": single,
                    "one_client_per_s": single_rate,
                    "four_clients_p50_ms": four,
                    "four_clients_per_s": four_rate,
                }
    return out


def _nprobes_sweep(
    info: dict[str, Any], corpus: Corpus, queries: list[tuple[int, Any]], exact: Exact
) -> list[dict[str, Any]]:
    """The service's LanceDB query in this process at several nprobes: recall@10 and p50."""
    import lancedb

    from vector_service.store import Scope
    from vector_service.store.rows import DISTANCE_COLUMN, ID_COLUMN, RESULT_COLUMNS, VECTOR_COLUMN

    table: Any = lancedb.connect(info["uri"]).open_table(TABLE)
    partitions = -(-len(corpus.vectors) // info["partition_rows"])
    out = []
    for nprobes in sorted({min(n, partitions) for n in NPROBES_TRIED}):
        times: list[float] = []
        recalls: list[float] = []
        for n, (team, vector) in enumerate(queries[:50]):
            t0 = time.perf_counter()
            rows = (
                table.search(vector, vector_column_name=VECTOR_COLUMN, query_type="vector")
                .distance_type("cosine")
                .where(Scope(team_id(team)).sql(), prefilter=True)
                .select([*RESULT_COLUMNS, DISTANCE_COLUMN])
                .limit(2 * LIMIT)
                .minimum_nprobes(nprobes)
                .maximum_nprobes(0)
                .refine_factor(info["refine_factor"])
                .to_arrow()
            )
            if n >= 10:
                times.append(_ms(t0))
            found = set(rows.column(ID_COLUMN).to_pylist()[:LIMIT])
            recalls.append(len(exact.top(team, vector) & found) / LIMIT)
        out.append(
            {
                "nprobes": nprobes,
                "of_partitions": partitions,
                "recall": round(float(np.mean(recalls)), 4),
                "p50_ms": round(statistics.median(times), 2),
            }
        )
    return out


# --- the results ------------------------------------------------------------------------------


def run(quick: bool) -> list[dict[str, Any]]:
    layouts = QUICK if quick else FULL
    measured = [run_layout(layout) for layout in layouts]
    blas = blas_threads(quick)
    results: list[dict[str, Any]] = []
    for m, layout in zip(measured, layouts, strict=True):
        search, ping = m["search_ms"], m["ping_ms"]
        if not m["answered_from_memory"]:
            how = (
                f"answered by LanceDB ({m['vector_index']}, {m['partitions']} partitions, "
                f"nprobes >= {m['nprobes']}): the tier did not hold the team"
            )
        elif layout.per_team > m["exact_max_rows"]:
            how = (
                f"answered from the search tier, the team held partitioned (over "
                f"VECTOR_TIER_EXACT_MAX_ROWS = {m['exact_max_rows']:,}: an in-memory IVF of "
                f"{m['tier']['partitions']} partitions, the nearest {m['tier']['probes']} probed)"
            )
        else:
            how = f"answered from the search tier (exact, {m['tier']['teams']} teams resident)"
        memory = (
            f"; server RSS {m['rss_mb']['before_tier']} MB before the tier loaded, "
            f"{m['rss_mb']['after_tier']} MB after ({m['rss_mb_per_100k_vectors']} MB per 100k "
            f"vectors; the tier counts {m['tier']['resident_mb']} MB, "
            f"{m['tier_mb_per_100k_vectors']} MB per 100k)"
            if m["tier"]["rows"]
            else ""
        )
        results.append(
            {
                "name": f"vector_search_{layout.name}",
                "title": f"Search RPC p50 vs empty call (Health/Check), {layout.teams} x "
                f"{layout.per_team:,} = {layout.rows:,} x {DIMENSIONS}",
                "ours": search["p50"],
                "baseline": ping["p50"],
                "unit": "ms p50",
                "ratio": round(ping["p50"] / search["p50"], 3),
                "target": LATENCY_TARGET,
                "notes": (
                    f"ratio = Check p50 / Search p50 (Search {search['p50'] / ping['p50']:.2f}x "
                    f"an empty call; target within 2x); p99 Search {search['p99']:.2f} ms vs "
                    f"Check {ping['p99']:.2f} ms ({search['p99'] / ping['p99']:.2f}x; target "
                    f"within 4x); recall@10 {m['recall']:.3f} vs exact numpy (worst query "
                    f"{m['worst_recall']:.1f}); {how}; first search of a cold team p50 "
                    f"{m['cold_ms']['p50']:.1f} ms (max {m['cold_ms']['max']:.1f}); "
                    f"{layout.queries} VECTOR queries, query_vector, scope = one team, limit "
                    f"{LIMIT}, alternating with Check on one channel; table written in "
                    f"{m['load_seconds']:.0f} s, Optimize {m['optimize_seconds']:.0f} s{memory}"
                ),
                "details": m,
            }
        )
    exact_layouts = [m for m in measured if m["rows"] // m["teams"] <= m["exact_max_rows"]]
    ann_layouts = [m for m in measured if m not in exact_layouts]
    if exact_layouts:
        worst = min(m["recall"] for m in exact_layouts)
        results.append(
            {
                "name": "vector_search_recall",
                "title": "Search recall@10 vs exact numpy, teams up to the exact tier's limit",
                "ours": worst,
                "baseline": 1.0,
                "unit": "recall@10",
                "ratio": worst,
                "target": EXACT_RECALL_TARGET,
                "notes": "worst layout of "
                + ", ".join(f"{m['layout']} {m['recall']:.3f}" for m in exact_layouts),
            }
        )
    for m in ann_layouts:
        sweep = m.get("nprobes_sweep", [])
        results.append(
            {
                "name": "vector_search_ann_recall",
                "title": f"Search recall@10 vs exact numpy, one team of {m['rows']:,} (ANN index)",
                "ours": m["recall"],
                "baseline": 1.0,
                "unit": "recall@10",
                "ratio": m["recall"],
                "target": ANN_RECALL_TARGET,
                "notes": (
                    f"the Search RPC answers of {m['layout']} (the tier's IVF: "
                    f"{m['tier']['probes']} of {m['tier']['partitions']} partitions probed); "
                    f"the alternative, the service's LanceDB query (IVF_SQ, refine "
                    f"x{m['refine_factor']}) in-process, recall and p50 by nprobes: "
                    + ", ".join(
                        f"{s['nprobes']}/{s['of_partitions']}: {s['recall']:.3f} "
                        f"{s['p50_ms']:.1f} ms"
                        for s in sweep
                    )
                ),
                "details": {"nprobes_sweep": sweep},
            }
        )
    cold = next((m for m in measured if m.get("extras")), None)
    if cold is not None:
        warm_p50 = cold["search_ms"]["p50"]
        results.append(
            {
                "name": "vector_search_cold",
                "title": f"First Search of a cold team of {cold['rows'] // cold['teams']:,} "
                "vs a warm one",
                "ours": cold["cold_ms"]["p50"],
                "baseline": warm_p50,
                "unit": "ms p50",
                "ratio": round(warm_p50 / cold["cold_ms"]["p50"], 3),
                "target": COLD_TARGET,
                "notes": (
                    f"ratio = warm p50 / cold p50 (cold {cold['cold_ms']['p50'] / warm_p50:.1f}x "
                    f"warm; target within 10x); cold = the first Search of each of "
                    f"{cold['cold_ms']['teams']} teams the tier does not hold (LanceDB "
                    f"answers; the load starts after), max {cold['cold_ms']['max']:.1f} ms"
                ),
            }
        )
        extras = cold["extras"]
        results.append(
            {
                "name": "vector_search_query_text",
                "title": "Search with query_text (local MiniLM model): repeated text vs new text",
                "ours": extras["query_text_warm_p50_ms"],
                "baseline": extras["query_text_cold_p50_ms"],
                "unit": "ms p50",
                "ratio": round(
                    extras["query_text_cold_p50_ms"] / extras["query_text_warm_p50_ms"], 3
                ),
                "target": 1.0,
                "notes": (
                    f"ratio = cold p50 / warm p50; on {cold['layout']}, VECTOR mode: a new text "
                    f"each time (the model runs) {extras['query_text_cold_p50_ms']:.1f} ms, the "
                    f"same text again (query cache) {extras['query_text_warm_p50_ms']:.1f} ms; "
                    f"other modes with query_text (repeated texts): FULL_TEXT "
                    f"{extras['full_text_p50_ms']:.1f} ms, HYBRID {extras['hybrid_p50_ms']:.1f} "
                    f"ms p50 (an empty call {cold['ping_ms']['p50']:.2f} ms); UpsertDocuments of "
                    f"{UPSERT_BATCH} documents into a resident team p50 "
                    f"{extras['upsert_100_p50_ms']:.1f} ms, of which the tier's Segment.upsert "
                    f"{extras['tier_upsert_100_p50_ms']:.2f} ms"
                ),
                "details": extras,
            }
        )
    one, default = blas["one_thread"], blas["default_threads"]
    results.append(
        {
            "name": "vector_search_blas",
            "title": "Search, four clients at once: one BLAS thread vs numpy's default, calls/s",
            "ours": one["four_clients_per_s"],
            "baseline": default["four_clients_per_s"],
            "unit": "calls/s",
            "ratio": round(one["four_clients_per_s"] / default["four_clients_per_s"], 3),
            "target": 1.0,
            "notes": (
                f"{blas['teams']} teams of {blas['per_team']:,}, two servers alike but for the "
                f"BLAS threads; four clients at once: p50 {one['four_clients_p50_ms']:.2f} ms "
                f"with one thread, {default['four_clients_p50_ms']:.2f} ms with the default; "
                f"one client: {one['one_client_p50_ms']:.2f} ms vs "
                f"{default['one_client_p50_ms']:.2f} ms ({one['one_client_per_s']} vs "
                f"{default['one_client_per_s']} calls/s)"
            ),
            "details": blas,
        }
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20 000 rows instead of 100 000")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()

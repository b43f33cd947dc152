"""The search tier (vector_service.tier): teams held in memory answer exactly what LanceDB
would, never another team's rows, stay in step with every upsert, delete, move and reindex of
this process, notice a table written by another process, and keep within their memory budget
while still answering every search correctly. Real servers, real LanceDB directories."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from loom.vector.v1 import vector_pb2

from tests.support import VectorServer, hash_embedder, serving_vector, vector_settings
from tests.vector.conftest import doc, ids, search, stats, upsert

ROOT = Path(__file__).resolve().parents[2]
# A small vocabulary: texts share words, so their vectors are near one another in many ways.
WORDS = [f"word{n}" for n in range(14)]
VECTOR = vector_pb2.SEARCH_MODE_VECTOR


def _texts(rng: np.random.Generator, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, 8)) + f" n{i}" for i in range(n)]


def tier(stub: Any) -> vector_pb2.SearchTierStats:
    return stats(stub).search_tier


def resident(stub: Any, team: str, **scope: str) -> vector_pb2.SearchTierStats:
    """Searches `team` once (a miss queues its load) and waits until the tier holds it: the
    next search of the team is a hit."""
    before = tier(stub).hits
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        search(stub, "warm up", team=team, mode=vector_pb2.SEARCH_MODE_VECTOR, **scope)
        current = tier(stub)
        if current.hits > before:
            return current
        time.sleep(0.02)
    raise AssertionError(f"team {team} never became resident: {tier(stub)}")


def distances(server: VectorServer, texts: dict[str, str], query: str) -> dict[str, float]:
    """Exact cosine distance of every id of `texts` (id -> text) to `query`, with the server's
    own model."""
    order = list(texts)
    vectors = server.embedder.inner.embed([texts[i] for i in order])
    q = server.embedder.inner.embed([query])[0]
    similarity = vectors @ q / np.linalg.norm(vectors, axis=1) / np.linalg.norm(q)
    return dict(zip(order, (1.0 - similarity).tolist(), strict=True))


def assert_exact(
    found: vector_pb2.SearchResponse, server: VectorServer, texts: dict[str, str], query: str
) -> None:
    """`found` is an exact top-k of `texts`: the k smallest distances, each reported truly
    (ties may come in any order)."""
    truth = distances(server, texts, query)
    best = sorted(truth.values())[: len(found.results)]
    assert len(found.results) == min(len(texts), len(found.results))
    for result, expected in zip(found.results, best, strict=True):
        assert result.document.id in truth
        assert abs(result.vector_distance - truth[result.document.id]) < 1e-5
        assert abs(result.vector_distance - expected) < 1e-5


def vector_ids(stub: Any, query: str, **kwargs: Any) -> list[str]:
    return ids(search(stub, query, mode=vector_pb2.SEARCH_MODE_VECTOR, **kwargs))


def test_tier_answers_exactly_and_never_ranks_another_team(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with serving_vector(vector_settings(tmp_path), hash_embedder()) as server:
        stub = server.service
        mine = dict(zip([f"a{i}" for i in range(120)], _texts(rng, 120), strict=True))
        sites = {doc_id: f"site-{i % 3}" for i, doc_id in enumerate(mine)}
        envs = {doc_id: f"env-{i % 2}" for i, doc_id in enumerate(mine)}
        query = "word1 word2 word3 word4 word5"
        upsert(
            stub,
            [doc(i, t, team="team-a", site=sites[i], env=envs[i]) for i, t in mine.items()],
        )
        # Team B holds the query itself: the nearest vectors of all, never to be ranked for A.
        upsert(stub, [doc(f"b{i}", f"{query} {i}", team="team-b") for i in range(50)])

        cold = search(stub, query, team="team-a", mode=vector_pb2.SEARCH_MODE_VECTOR)
        assert tier(stub).misses >= 1
        resident(stub, "team-a")
        warm = search(stub, query, team="team-a", mode=vector_pb2.SEARCH_MODE_VECTOR)
        assert len(warm.results) == 10
        assert_exact(warm, server, mine, query)
        assert_exact(cold, server, mine, query)
        cold_by_id = {r.document.id: r.document for r in cold.results}
        for result in warm.results:
            if result.document.id in cold_by_id:
                assert result.document == cold_by_id[result.document.id]
        assert {r.document.scope.team_id for r in warm.results} == {"team-a"}

        # Narrower than the team: still exact, from the same segment.
        hits = tier(stub).hits
        for site, env in [("site-1", ""), ("", "env-0"), ("site-2", "env-1")]:
            wanted = {
                i: t
                for i, t in mine.items()
                if (not site or sites[i] == site) and (not env or envs[i] == env)
            }
            found = search(stub, query, team="team-a", site=site, env=env, limit=15, mode=VECTOR)
            assert len(found.results) == 15
            assert_exact(found, server, wanted, query)
        assert search(stub, query, team="team-a", site="site-9").results == []
        assert tier(stub).hits == hits + 4

        resident(stub, "team-b")
        assert {r.document.scope.team_id for r in search(stub, query, team="team-b").results} == {
            "team-b"
        }
        assert search(stub, query, team="team-c").results == []
        current = tier(stub)
        assert (current.teams, current.rows) == (2, 170)
        assert 0 < current.resident_bytes <= current.max_bytes
        assert current.exact_max_rows == 50_000


def test_tier_follows_upserts_deletes_and_moves(tmp_path: Path) -> None:
    with serving_vector(vector_settings(tmp_path), hash_embedder()) as server:
        stub = server.service
        upsert(
            stub, [doc(f"a{i}", f"filler text number {i}", source=f"p{i % 4}") for i in range(40)]
        )
        upsert(stub, [doc("b0", "something else entirely", team="team-b")])
        resident(stub, "team-a")
        resident(stub, "team-b")
        hits = tier(stub).hits

        upsert(stub, [doc("new", "zebras crossing the river")])
        assert vector_ids(stub, "zebras crossing the river")[0] == "new"
        upsert(stub, [doc("new", "penguins on the ice")])  # same id, new text and vector
        assert vector_ids(stub, "penguins on the ice")[0] == "new"
        assert vector_ids(stub, "zebras crossing the river", limit=50).count("new") == 1

        # The same id moves to team B: gone from A, found in B.
        upsert(stub, [doc("new", "penguins on the ice", team="team-b")])
        assert "new" not in vector_ids(stub, "penguins on the ice", limit=50)
        assert vector_ids(stub, "penguins on the ice", team="team-b")[0] == "new"

        def delete(**kwargs: Any) -> int:
            team = kwargs.pop("team", "team-a")
            env = kwargs.pop("env", "")
            answer = stub.DeleteDocuments(
                vector_pb2.DeleteDocumentsRequest(
                    collection=vector_pb2.COLLECTION_PAGES,
                    scope=vector_pb2.Scope(team_id=team, environment_id=env),
                    **kwargs,
                )
            )
            return int(answer.deleted_count)

        assert delete(ids=["a1", "a2"]) == 2
        assert delete(source_id="p3") == 10
        left = set(vector_ids(stub, "filler text number", limit=100))
        assert left == {f"a{i}" for i in range(40) if i not in (1, 2) and i % 4 != 3}
        assert delete(team="team-b", env="env-1", all_in_scope=True) == 2
        assert search(stub, "penguins", team="team-b").results == []
        assert len(vector_ids(stub, "filler text number", limit=100)) == len(left)
        current = tier(stub)
        assert current.hits >= hits + 7, "every search above was answered from memory"
        assert (current.teams, current.rows) == (2, len(left))


def test_tier_drops_a_replaced_table_and_reloads_the_new_one(tmp_path: Path) -> None:
    with serving_vector(vector_settings(tmp_path), hash_embedder()) as server:
        stub = server.service
        upsert(stub, [doc(f"a{i}", f"filler text number {i}") for i in range(30)])
        upsert(stub, [doc("pricing", "pricing plans and what they cost")])
        resident(stub, "team-a")
        stub.Reindex(vector_pb2.ReindexRequest(collection=vector_pb2.COLLECTION_PAGES))
        deadline = time.monotonic() + 60
        while stats(stub).reindex.state == vector_pb2.ReindexProgress.STATE_RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        after = stats(stub)
        assert after.table_name == "page_embeddings__g2"
        assert after.search_tier.invalidations == 1
        assert after.search_tier.teams == 0
        resident(stub, "team-a")
        upsert(stub, [doc("late", "a late page about zebras")])
        assert vector_ids(stub, "pricing plans and what they cost")[0] == "pricing"
        assert vector_ids(stub, "a late page about zebras")[0] == "late"
        assert tier(stub).teams == 1


def test_eviction_under_a_tiny_budget_still_answers_correctly(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    teams = {
        f"team-{t}": dict(zip([f"t{t}-{i}" for i in range(60)], _texts(rng, 60), strict=True))
        for t in range(8)
    }
    # About two teams of 60 rows fit (a row costs ~2 KB: its 1.5 KB vector and its columns).
    budget = 300_000
    settings = vector_settings(tmp_path, tier_max_bytes=budget)
    with serving_vector(settings, hash_embedder()) as server:
        stub = server.service
        for team, texts in teams.items():
            upsert(stub, [doc(i, t, team=team) for i, t in texts.items()])
        query = "word6 word7 word8 word9"
        for _ in range(2):
            for team in teams:
                # Cold (LanceDB answers, the load evicts another team), then from memory.
                for warm in (False, True):
                    if warm:
                        resident(stub, team)
                    found = search(stub, query, team=team, mode=VECTOR)
                    assert len(found.results) == 10
                    assert_exact(found, server, teams[team], query)
                    assert {r.document.scope.team_id for r in found.results} == {team}
                    assert tier(stub).total_resident_bytes <= budget
        current = tier(stub)
        assert current.peak_resident_bytes <= budget
        assert current.evictions > 0
        assert current.hits > 0
        assert 1 <= current.teams < len(teams)


def test_tier_off_answers_from_lancedb(tmp_path: Path) -> None:
    with serving_vector(vector_settings(tmp_path, tier_max_bytes=0), hash_embedder()) as server:
        stub = server.service
        upsert(stub, [doc("a", "pricing plans"), doc("b", "about us")])
        for _ in range(3):
            assert vector_ids(stub, "pricing plans")[0] == "a"
        current = tier(stub)
        assert (current.teams, current.hits, current.max_bytes) == (0, 0, 0)


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime

    import lancedb

    from vector_service.embeddings import EmbedderConfig, create_embedder
    from vector_service.store.rows import Document, rows_table

    table = lancedb.connect(sys.argv[1]).open_table("page_embeddings")
    embedder = create_embedder(EmbedderConfig(provider="hash"))
    docs = [Document("foreign", "team-a", "site-1", "env-1", "", "a row from elsewhere")]
    rows = rows_table(table.schema, docs, embedder.embed([d.text for d in docs]), embedder.model,
                      datetime.now(UTC))
    table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(rows)
    """
)


def test_a_write_by_another_process_drops_the_stale_segments(tmp_path: Path) -> None:
    settings = vector_settings(tmp_path)
    with serving_vector(settings, hash_embedder()) as server:
        stub = server.service
        upsert(stub, [doc(f"a{i}", f"filler text number {i}") for i in range(20)])
        resident(stub, "team-a")
        # docs/vector.md: one process writes each table. This one did not see the other
        # write, and neither does its LanceDB handle until its own next write.
        subprocess.run(
            [sys.executable, "-c", WRITER, settings.database_uri], cwd=ROOT, check=True, timeout=60
        )
        upsert(stub, [doc("ours", "our own next row")])
        current = tier(stub)
        assert current.invalidations == 1
        assert current.teams == 0
        assert vector_ids(stub, "a row from elsewhere")[0] == "foreign"  # LanceDB answers
        resident(stub, "team-a")
        assert vector_ids(stub, "a row from elsewhere")[0] == "foreign"  # and the reloaded tier
        assert vector_ids(stub, "our own next row")[0] == "ours"


def test_writes_while_a_team_loads_are_not_lost(tmp_path: Path) -> None:
    with serving_vector(vector_settings(tmp_path), hash_embedder()) as server:
        stub = server.service
        for start in range(0, 3000, 1000):
            upsert(stub, [doc(f"f{i}", f"filler row {i}") for i in range(start, start + 1000)])
        errors: list[BaseException] = []

        def write() -> None:
            try:
                for n in range(40):
                    upsert(stub, [doc(f"w{n}", f"written while loading {n} zebra{n}")])
                    if n % 10 == 9:
                        stub.DeleteDocuments(
                            vector_pb2.DeleteDocumentsRequest(
                                collection=vector_pb2.COLLECTION_PAGES,
                                scope=vector_pb2.Scope(team_id="team-a"),
                                ids=[f"w{n - 1}", f"f{n}"],
                            )
                        )
            except BaseException as exc:
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        while writer.is_alive():
            search(stub, "filler row", mode=VECTOR)  # each miss queues a load
        writer.join()
        assert not errors
        resident(stub, "team-a")
        deleted = {f"w{n - 1}" for n in range(9, 40, 10)}
        for n in range(40):
            found = vector_ids(stub, f"written while loading {n} zebra{n}", limit=3)
            if f"w{n}" in deleted:
                assert f"w{n}" not in found
            else:
                assert found[0] == f"w{n}"
        assert tier(stub).rows == 3000 + 40 - 2 * len(deleted)


def test_a_team_over_the_exact_limit_is_searched_through_its_partitions(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = 2400
    texts = dict(zip([f"r{i}" for i in range(rows)], _texts(rng, rows), strict=True))
    sites = {doc_id: "site-rare" if i % 240 == 0 else "site-1" for i, doc_id in enumerate(texts)}
    # 48 partitions of ~50 rows; a search probes the nearest 8 (1/6 of the rows).
    settings = vector_settings(tmp_path, tier_exact_max_rows=300, tier_partition_rows=50)
    with serving_vector(settings, hash_embedder()) as server:
        stub = server.service
        for start in range(0, rows, 1000):
            chunk = list(texts.items())[start : start + 1000]
            upsert(stub, [doc(i, t, site=sites[i]) for i, t in chunk])
        upsert(stub, [doc("other", "word1 word2 word3", team="team-b")])
        resident(stub, "team-a")
        assert tier(stub).partitioned_teams == 1
        recalls = []
        for n in range(30):
            query = " ".join(rng.choice(WORDS, 5)) + f" q{n}"
            found = search(stub, query, mode=VECTOR)
            assert {r.document.scope.team_id for r in found.results} == {"team-a"}
            truth = distances(server, texts, query)
            best = sorted(truth.values())[9]
            recalls.append(sum(truth[i] <= best + 1e-6 for i in ids(found)) / 10)
        assert np.mean(recalls) >= 0.9, recalls
        # A filter that leaves few rows probes further: all 10 rows of the rare site.
        rare = {i: t for i, t in texts.items() if sites[i] == "site-rare"}
        found = search(stub, "word1 word2", site="site-rare", mode=VECTOR)
        assert_exact(found, server, rare, "word1 word2")
        assert len(found.results) == 10
        # In step: a new row (the unpartitioned tail) and a deletion.
        upsert(stub, [doc("zebra", "zebras crossing the river")])
        assert vector_ids(stub, "zebras crossing the river")[0] == "zebra"
        stub.DeleteDocuments(
            vector_pb2.DeleteDocumentsRequest(
                collection=vector_pb2.COLLECTION_PAGES,
                scope=vector_pb2.Scope(team_id="team-a"),
                ids=["zebra"],
            )
        )
        assert "zebra" not in vector_ids(stub, "zebras crossing the river")
        assert tier(stub).hits > 30


def test_a_team_searched_before_its_first_write_is_loaded_after_it(tmp_path: Path) -> None:
    with serving_vector(vector_settings(tmp_path), hash_embedder()) as server:
        stub = server.service
        upsert(stub, [doc("a1", "word1 word2")])
        assert search(stub, "word1", team="team-new", mode=VECTOR).results == []
        # The miss's load finds no rows, holds nothing, and is not retried for a minute...
        deadline = time.monotonic() + 10
        while tier(stub).loading and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tier(stub).teams == 0
        # ...unless the team writes.
        upsert(stub, [doc("n1", "word3 word4", team="team-new")])
        resident(stub, "team-new")
        assert vector_ids(stub, "word3 word4", team="team-new") == ["n1"]

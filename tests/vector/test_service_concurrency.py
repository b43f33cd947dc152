"""Writes to a collection are serialized inside the process: measured here, concurrent
merge_insert of the same new keys from several writers silently made duplicate rows."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from loom.vector.v1 import vector_pb2

from tests.support import VectorServer
from tests.vector.conftest import doc, search, stats, upsert

WRITERS = 8
IDS = 50


def test_concurrent_upserts_of_the_same_ids_make_one_row_each(
    vector_server: VectorServer,
) -> None:
    stub = vector_server.service
    start = threading.Barrier(WRITERS)

    def writer(n: int) -> list[int]:
        start.wait()
        counts = []
        for round_ in range(3):
            # Every writer sends the same new ids; half of the texts differ per writer and
            # round, so some upserts insert, some update and some find nothing to do.
            docs = [
                doc(f"d{i}", f"text {i}" if i % 2 else f"text {i} by {n} in {round_}")
                for i in range(IDS)
            ]
            answer = upsert(stub, docs)
            counts.append(answer.created_count)
        return counts

    with ThreadPoolExecutor(WRITERS) as pool:
        created = [c for counts in pool.map(writer, range(WRITERS)) for c in counts]

    assert sum(created) == IDS, "each id is created exactly once"
    assert stats(stub).row_count == IDS
    # Read every row back: one per id, none duplicated.
    found = Counter(
        r.document.id
        for r in search(stub, "text", mode=vector_pb2.SEARCH_MODE_FULL_TEXT, limit=100).results
    )
    assert len(found) == IDS
    assert set(found.values()) == {1}
    stub.Optimize(vector_pb2.OptimizeRequest())
    assert stats(stub).row_count == IDS


def test_searches_run_while_writes_are_serialized(vector_server: VectorServer) -> None:
    stub = vector_server.service
    upsert(stub, [doc(f"seed{i}", f"seed text {i}") for i in range(20)])
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                assert search(stub, "seed text").results
            except BaseException as exc:
                errors.append(exc)
                return

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers:
        thread.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda n: upsert(stub, [doc(f"w{n}-{i}", f"write {n} {i}") for i in range(10)]),
                    range(12),
                )
            )
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert not errors, errors[:1]
    assert stats(stub).row_count == 20 + 120

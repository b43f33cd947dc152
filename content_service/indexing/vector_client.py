"""content_service's client of vector_service: the dispatcher's writes and reconcile's reads.

A servicekit.clients channel: every call carries the service token and the deadline
`timeout`. Retries are the caller's business (the outbox keeps the work until a call
succeeds), so the channel retries nothing by itself."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from loom.vector.v1 import vector_pb2, vector_pb2_grpc

from content_service.indexing.documents import IMAGES, PAGES, POSTS, SECTIONS, Scope, VectorDocument
from servicekit.clients import open_channel

COLLECTIONS = {
    PAGES: vector_pb2.COLLECTION_PAGES,
    SECTIONS: vector_pb2.COLLECTION_SECTIONS,
    POSTS: vector_pb2.COLLECTION_POSTS,
    IMAGES: vector_pb2.COLLECTION_IMAGES,
}
# vector_service takes at most 1000 ids or documents per call; documents are sent in smaller
# batches so one call's model time stays well inside the timeout.
UPSERT_BATCH = 128
# vector_service's limit on the texts of one UpsertDocuments (MAX_UPSERT_CHARS there).
UPSERT_CHARS = 64_000
DELETE_BATCH = 1000


def _scope(scope: Scope) -> vector_pb2.Scope:
    return vector_pb2.Scope(
        team_id=scope.team_id, site_id=scope.site_id, environment_id=scope.environment_id
    )


class VectorClient:
    def __init__(self, address: str, token: str, *, timeout: float) -> None:
        self.address = address
        self._channel = open_channel(address, token, timeout=timeout)
        self._stub = vector_pb2_grpc.VectorServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def upsert(self, collection: str, docs: Sequence[VectorDocument]) -> int:
        """Returns how many texts the model embedded."""
        embedded = 0
        for batch in upsert_batches(docs):
            request = vector_pb2.UpsertDocumentsRequest(
                collection=COLLECTIONS[collection],
                documents=[
                    vector_pb2.Document(
                        id=d.id, scope=_scope(d.scope), source_id=d.source_id, text=d.text
                    )
                    for d in batch
                ],
            )
            response = self._stub.UpsertDocuments(request)
            embedded += response.embedded_count
        return embedded

    def delete(
        self,
        collection: str,
        scope: Scope,
        *,
        ids: Sequence[str] = (),
        source_id: str = "",
        all_in_scope: bool = False,
    ) -> None:
        """By ids (in batches), by source id, or everything in the scope."""
        batches = [ids[i : i + DELETE_BATCH] for i in range(0, len(ids), DELETE_BATCH)] or [()]
        for batch in batches:
            self._stub.DeleteDocuments(
                vector_pb2.DeleteDocumentsRequest(
                    collection=COLLECTIONS[collection],
                    scope=_scope(scope),
                    ids=list(batch),
                    source_id=source_id,
                    all_in_scope=all_in_scope,
                )
            )

    def list_documents(self, collection: str, scope: Scope) -> Iterator[vector_pb2.Document]:
        token = ""
        while True:
            response = self._stub.ListDocuments(
                vector_pb2.ListDocumentsRequest(
                    collection=COLLECTIONS[collection], scope=_scope(scope), page_token=token
                )
            )
            yield from response.documents
            token = response.next_page_token
            if not token:
                return


def upsert_batches(docs: Sequence[VectorDocument]) -> list[Sequence[VectorDocument]]:
    """The documents in calls of at most UPSERT_BATCH documents and UPSERT_CHARS characters
    of text (one longer text goes alone: a document's text is at most 100,000)."""
    out: list[Sequence[VectorDocument]] = []
    start = chars = 0
    for i, doc in enumerate(docs):
        if i > start and (i - start >= UPSERT_BATCH or chars + len(doc.text) > UPSERT_CHARS):
            out.append(docs[start:i])
            start, chars = i, 0
        chars += len(doc.text)
    if start < len(docs):
        out.append(docs[start:])
    return out

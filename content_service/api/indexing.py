"""IndexingService: the index outbox's status, and reconcile with vector_service."""

from __future__ import annotations

import time

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from loom.content.v1 import indexing_pb2, indexing_pb2_grpc

from content_service import scope
from content_service.db.engine import Database
from content_service.db.models import Team
from content_service.indexing import reconcile, status
from content_service.indexing.dispatcher import Dispatcher
from content_service.indexing.vector_client import VectorClient
from servicekit.auth import current_principal
from servicekit.errors import FailedPrecondition, NotFound, Unavailable, invalid


def _time(seconds: float) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


class IndexingServicer(indexing_pb2_grpc.IndexingServiceServicer):
    def __init__(
        self,
        db: Database,
        dispatcher: Dispatcher | None,
        client: VectorClient | None,
    ) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.client = client

    def GetIndexingStatus(
        self, request: indexing_pb2.GetIndexingStatusRequest, context: grpc.ServicerContext
    ) -> indexing_pb2.IndexingStatus:
        team_id = current_principal().team_for(request.team_id, "look at")
        with self.db.read() as s:
            outbox = status.outbox_status(s, team_id)
        answer = indexing_pb2.IndexingStatus(
            dispatcher_enabled=self.dispatcher is not None,
            vector_address=self.client.address if self.client else "",
            pending_count=outbox.pending,
            failing_count=outbox.failing,
            last_error=outbox.last_error,
        )
        oldest = outbox.oldest_created_at
        if oldest is not None:
            answer.oldest_pending_time.CopyFrom(_time(oldest))
            answer.oldest_pending_age.CopyFrom(
                duration_pb2.Duration(seconds=max(0, int(time.time()) - int(oldest)))
            )
        if self.dispatcher is not None:
            stats = self.dispatcher.stats
            answer.delivered_count = stats.delivered
            answer.delivering = stats.holds_lock
            if stats.last_delivery_at is not None:
                answer.last_delivery_time.CopyFrom(_time(stats.last_delivery_at))
            # This process's latest error, unless it has delivered since.
            if stats.last_error and (
                stats.last_delivery_at is None
                or (stats.last_error_at or 0) > stats.last_delivery_at
            ):
                answer.last_error = stats.last_error
        return answer

    def ReconcileIndex(
        self, request: indexing_pb2.ReconcileIndexRequest, context: grpc.ServicerContext
    ) -> indexing_pb2.ReconcileIndexResponse:
        principal = current_principal()
        team_id = principal.team_for(request.team_id, "look at")
        if request.environment_id and not request.site_id:
            raise invalid("site_id", "is required with environment_id")
        if request.site_id and not team_id:
            raise invalid("team_id", "is required with site_id")
        if self.client is None:
            raise FailedPrecondition(
                "this content_service has no vector_service address (set CONTENT_VECTOR_ADDRESS)",
                reason="VECTOR_SERVICE_NOT_CONFIGURED",
            )
        with self.db.read() as s:
            if team_id and s.get(Team, team_id) is None:
                raise NotFound("team", team_id)
            if request.site_id:
                site = scope.site(s, principal, request.site_id)
                if site.team_id != team_id:
                    raise NotFound("site", request.site_id)
            if request.environment_id:
                env = scope.environment(s, principal, request.environment_id)
                if env.site_id != request.site_id:
                    raise NotFound("environment", request.environment_id)
            what = reconcile.target(s, team_id, request.site_id, request.environment_id)
            pending = status.pending_count(s, team_id)
        try:
            report = reconcile.reconcile(self.db, self.client, what, repair=request.repair)
        except grpc.RpcError as exc:
            detail = f"{exc.code().name}: {exc.details()}"
            raise Unavailable(f"vector_service at {self.client.address}: {detail}") from exc
        return indexing_pb2.ReconcileIndexResponse(
            collections=[
                indexing_pb2.CollectionDrift(
                    collection=d.collection,
                    expected_count=d.expected,
                    indexed_count=d.indexed,
                    missing_count=len(d.missing),
                    orphaned_count=len(d.orphaned),
                    stale_count=len(d.stale),
                    sample_ids=d.sample(),
                )
                for d in report.drifts
            ],
            drift_count=report.total,
            queued_count=report.queued,
            pending_count=pending,
        )

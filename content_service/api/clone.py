"""EnvironmentCloneService: copy an environment inside its site."""

from __future__ import annotations

import grpc
from loom.content.v1 import clone_pb2, clone_pb2_grpc

from content_service import clone
from content_service.api.tenancy import env_proto
from content_service.db.engine import Database
from servicekit.auth import current_principal


class EnvironmentCloneServicer(clone_pb2_grpc.EnvironmentCloneServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    def CloneEnvironment(
        self, request: clone_pb2.CloneEnvironmentRequest, context: grpc.ServicerContext
    ) -> clone_pb2.CloneEnvironmentResponse:
        with self.db.write() as s:
            result = clone.clone_environment(
                s, current_principal(), request.source_environment_id, request.name
            )
            environment = env_proto(result.environment)
        c = result.counts
        return clone_pb2.CloneEnvironmentResponse(
            environment=environment,
            counts=clone_pb2.CloneCounts(
                section_definitions=c.get("section_definitions", 0),
                pages=c.get("pages", 0),
                sections=c.get("sections", 0),
                posts=c.get("posts", 0),
                post_tags=c.get("post_tags", 0),
                menus=c.get("menus", 0),
                site_settings=c.get("site_settings", 0),
            ),
        )

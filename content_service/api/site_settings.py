"""SiteSettingsService: one set of settings per environment."""

from __future__ import annotations

from typing import Any

import grpc
from loom.content.v1 import settings_pb2, settings_pb2_grpc

from content_service import site_settings
from content_service.api.common import mask_paths
from content_service.api.convert import dict_to_struct, struct_field_to_json, ts
from content_service.db.engine import Database
from servicekit.auth import current_principal


def settings_proto(view: site_settings.SettingsView) -> settings_pb2.SiteSettings:
    return settings_pb2.SiteSettings(
        environment_id=view.environment_id,
        site_id=view.site_id,
        site_name=view.site_name,
        default_locale=view.default_locale,
        theme=view.theme,
        seo_title=view.seo_title,
        seo_description=view.seo_description,
        extra=dict_to_struct(view.extra),
        update_time=ts(view.updated_at),
    )


class SiteSettingsServicer(settings_pb2_grpc.SiteSettingsServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    def GetSiteSettings(
        self, request: settings_pb2.GetSiteSettingsRequest, context: grpc.ServicerContext
    ) -> settings_pb2.SiteSettings:
        with self.db.read() as s:
            return settings_proto(
                site_settings.get_settings(s, current_principal(), request.environment_id)
            )

    def UpdateSiteSettings(
        self, request: settings_pb2.UpdateSiteSettingsRequest, context: grpc.ServicerContext
    ) -> settings_pb2.SiteSettings:
        paths = mask_paths(request.update_mask, site_settings.UPDATABLE)
        v = request.site_settings
        changes: dict[str, Any] = {
            name: getattr(v, name) for name in site_settings.UPDATABLE if name in paths
        }
        if "extra" in paths:
            changes["extra"] = struct_field_to_json(v, "extra", "site_settings.extra")
        with self.db.write() as s:
            return settings_proto(
                site_settings.update_settings(s, current_principal(), v.environment_id, changes)
            )

"""Site settings: one site_settings row per environment, typed fields plus free JSON.

An environment whose settings were never written reads as the defaults (nothing is stored
until the first update)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from content_service import scope, validation
from content_service.db.models import Site, SiteSettings
from content_service.db.values import loads_object, now
from servicekit.auth import Principal
from servicekit.errors import Aborted, invalid, shown

DEFAULT_LOCALE = "en"
DEFAULT_THEME = "default"
MAX_EXTRA_BYTES = 64 * 1024
UPDATABLE = ("site_name", "default_locale", "theme", "seo_title", "seo_description", "extra")

# BCP 47, the common subset: language (2-3 letters), optional script (4 letters), optional
# region (2 letters or 3 digits), then variants (5-8 alphanumerics, or a digit and 3).
_LOCALE = re.compile(
    r"^(?P<language>[A-Za-z]{2,3})"
    r"(?:-(?P<script>[A-Za-z]{4}))?"
    r"(?:-(?P<region>[A-Za-z]{2}|[0-9]{3}))?"
    r"(?P<variants>(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*)$"
)
MAX_LOCALE = 35


@dataclass
class SettingsView:
    environment_id: str
    site_id: str
    site_name: str
    default_locale: str
    theme: str
    seo_title: str
    seo_description: str
    extra: dict[str, Any]
    updated_at: int | None


def locale(value: str, field: str) -> str:
    """The tag in canonical case (en-us -> en-US, zh-hant-tw -> zh-Hant-TW)."""
    match = _LOCALE.match(value) if len(value) <= MAX_LOCALE else None
    if match is None:
        raise invalid(
            field,
            f"must be a BCP 47 language tag such as en, en-US or zh-Hant-TW; got {shown(value)}",
        )
    out = match["language"].lower()
    if match["script"]:
        out += "-" + match["script"].title()
    if match["region"]:
        out += "-" + match["region"].upper()
    return out + match["variants"].lower()


def _view(row: SiteSettings) -> SettingsView:
    return SettingsView(
        environment_id=row.environment_id,
        site_id=row.site_id,
        site_name=row.site_name,
        default_locale=row.default_locale,
        theme=row.theme,
        seo_title=row.seo_title,
        seo_description=row.seo_description,
        extra=loads_object(row.extra),
        updated_at=row.updated_at,
    )


def _defaults(session: Session, environment_id: str, site_id: str) -> SettingsView:
    site_name = session.scalar(select(Site.name).where(Site.id == site_id)) or ""
    return SettingsView(
        environment_id=environment_id,
        site_id=site_id,
        site_name=site_name,
        default_locale=DEFAULT_LOCALE,
        theme=DEFAULT_THEME,
        seo_title="",
        seo_description="",
        extra={},
        updated_at=None,
    )


def get_settings(session: Session, principal: Principal, environment_id: str) -> SettingsView:
    env = scope.environment(session, principal, environment_id)
    row = session.get(SiteSettings, env.environment_id)
    return _view(row) if row else _defaults(session, env.environment_id, env.site_id)


def update_settings(
    session: Session, principal: Principal, environment_id: str, changes: dict[str, Any]
) -> SettingsView:
    env = scope.environment(session, principal, environment_id, "site_settings.environment_id")
    values: dict[str, Any] = {}
    if "site_name" in changes:
        values["site_name"] = validation.text(
            changes["site_name"], "site_settings.site_name", max_len=200, required=False
        )
    if "default_locale" in changes:
        values["default_locale"] = locale(changes["default_locale"], "site_settings.default_locale")
    if "theme" in changes:
        values["theme"] = validation.text(
            changes["theme"], "site_settings.theme", max_len=100, required=False
        )
    if "seo_title" in changes:
        values["seo_title"] = validation.text(
            changes["seo_title"], "site_settings.seo_title", max_len=500, required=False
        )
    if "seo_description" in changes:
        values["seo_description"] = validation.text(
            changes["seo_description"],
            "site_settings.seo_description",
            max_len=2_000,
            required=False,
        )
    if "extra" in changes:
        values["extra"] = validation.json_object(
            changes["extra"], "site_settings.extra", max_bytes=MAX_EXTRA_BYTES
        )
    row = session.scalars(
        select(SiteSettings)
        .where(SiteSettings.environment_id == env.environment_id)
        .with_for_update()
    ).first()
    if row is None:
        base = _defaults(session, env.environment_id, env.site_id)
        row = SiteSettings(
            environment_id=env.environment_id,
            site_id=env.site_id,
            site_name=base.site_name,
            default_locale=base.default_locale,
            theme=base.theme,
            seo_title="",
            seo_description="",
            extra="{}",
            updated_at=now(),
        )
        session.add(row)
    for name, value in values.items():
        setattr(row, name, value)
    row.updated_at = now()
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent first update inserted the row (PostgreSQL)
        raise Aborted("the settings were created concurrently; retry", reason="CONFLICT") from exc
    return _view(row)

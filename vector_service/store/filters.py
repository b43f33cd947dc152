"""SQL filters over a collection table: quoted literals, id lists, and the tenant scope every
search, listing and delete is confined to.

Ids and scope ids end up inside these literals: the API admits only ID_PATTERN (no quotes),
and the literal is escaped anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from vector_service.store.rows import SCOPE_COLUMNS

ID_PATTERN = re.compile(r"^[A-Za-z0-9._:/@-]{1,256}$")


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def in_list(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(quote(v) for v in values)})"


@dataclass(frozen=True)
class Scope:
    """A team, optionally narrowed to one site and one environment."""

    team_id: str
    site_id: str = ""
    environment_id: str = ""

    def sql(self) -> str:
        team, site, environment = SCOPE_COLUMNS
        parts = [f"{team} = {quote(self.team_id)}"]
        if self.site_id:
            parts.append(f"{site} = {quote(self.site_id)}")
        if self.environment_id:
            parts.append(f"{environment} = {quote(self.environment_id)}")
        return " AND ".join(parts)

"""Core selects run on the driver's own cursor, for the hottest single-statement reads
(GetPage, GetPageBySlug, the API key lookup of every call).

Connection.execute spends most of a small read's time around the query: the compiled-cache
lookup, the execution context, the CursorResult and a Row per row. Compiled once per dialect
and run on the DBAPI cursor, a GetPage (checkout, query, Page message) costs 40 us in-process
instead of 87, and make bench's GetPage vs Echo went from 0.58-0.60 to 0.69-0.71. Only for
statements whose parameters and columns need no type conversion (text, integers): no bind or
result processors run.

These statements bypass SQLAlchemy's engine events (before_cursor_execute and the tracing
built on them); RawSelect.observers is their hook instead: each is called with the SQL and
its parameters before the statement runs (tests/content/test_query_plans.py explains them)."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positions: tuple[str, ...] | None  # bind names in order, for positional paramstyles
    row: Any  # a namedtuple class: rows keep the statement's column names


@dataclass(frozen=True, slots=True)
class StatementConnection:
    """What a raw statement runs on: the dialect (to compile for) and the driver's own
    connection (Database.read_statement gives one)."""

    dialect: Dialect
    driver_connection: Any


class RawSelect:
    observers: ClassVar[list[Callable[[str, Any], None]]] = []

    def __init__(self, statement: Select[*tuple[Any, ...]]) -> None:
        self._statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def all(self, conn: StatementConnection, params: Mapping[str, Any]) -> list[Any]:
        """Every row, as named tuples with the statement's column names. A driver error is
        raised as SQLAlchemy's wrapper, as Connection.execute would."""
        dialect = conn.dialect
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = self._compile(dialect)
        args: Any = (
            tuple(params[name] for name in compiled.positions)
            if compiled.positions is not None
            else dict(params)
        )
        for observe in RawSelect.observers:
            observe(compiled.sql, args)
        dbapi = dialect.loaded_dbapi
        cursor = conn.driver_connection.cursor()
        try:
            cursor.execute(compiled.sql, args)
            fetched = cursor.fetchall()
        except dbapi.Error as exc:
            raise DBAPIError.instance(compiled.sql, args, exc, dbapi.Error) from exc
        finally:
            cursor.close()
        make = compiled.row._make
        return [make(row) for row in fetched]

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self._statement.compile(dialect=dialect)
        names = list(self._statement.selected_columns.keys())
        positions = tuple(compiled.positiontup) if compiled.positiontup is not None else None
        return _Compiled(str(compiled), positions, namedtuple("Row", names))

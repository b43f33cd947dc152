"""db.raw.RawSelect: the same rows, in the same order and under the same names, as
Connection.execute gives for the statement, on both backends; driver errors arrive wrapped as
SQLAlchemy's, so the one error mapping still applies."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Table, bindparam, select, text
from sqlalchemy.exc import DBAPIError

from content_service.db.engine import Database
from content_service.db.models import Team
from content_service.db.raw import RawSelect

TEAMS: Table = Team.__table__  # type: ignore[assignment]


def test_rows_match_connection_execute(migrated_db: Database) -> None:
    with migrated_db.write() as s:
        for i in range(5):
            s.execute(TEAMS.insert().values(id=f"t{i}", name=f"Team {i}", created_at=i * 10))
    statement = (
        select(TEAMS.c.id, TEAMS.c.name.label("team_name"), TEAMS.c.created_at)
        .where(TEAMS.c.created_at >= bindparam("since"), TEAMS.c.id != bindparam("skip"))
        .order_by(TEAMS.c.created_at.desc())
    )
    raw = RawSelect(statement)
    with migrated_db.read() as session:
        expected = session.execute(statement, {"since": 10, "skip": "t3"}).all()
    for _ in range(2):  # compiled on the first call, reused on the second
        with migrated_db.read_statement() as conn:
            rows = raw.all(conn, {"skip": "t3", "since": 10})
        assert [tuple(r) for r in rows] == [tuple(r) for r in expected]
        assert [(r.id, r.team_name) for r in rows] == [
            ("t4", "Team 4"),
            ("t2", "Team 2"),
            ("t1", "Team 1"),
        ]
    with migrated_db.read_statement() as conn:
        assert raw.all(conn, {"since": 1000, "skip": ""}) == []


def test_driver_errors_arrive_as_sqlalchemy_errors(migrated_db: Database) -> None:
    statement = select(TEAMS.c.id).where(TEAMS.c.id == bindparam("id"))
    raw = RawSelect(statement)
    with migrated_db.write() as s:
        s.execute(text("DROP TABLE teams" + ("" if migrated_db.is_sqlite else " CASCADE")))
    with pytest.raises(DBAPIError, match="teams"), migrated_db.read_statement() as conn:
        raw.all(conn, {"id": "x"})


def test_the_connection_is_left_outside_any_transaction(
    migrated_db: Database,
) -> None:
    """psycopg opens a transaction for the first statement; the pool's reset must end it, or
    the connection would sit idle in transaction holding its locks. SQLite's statement
    connection (one per thread) runs in autocommit: no transaction stays open after it."""
    raw = RawSelect(select(TEAMS.c.id).where(TEAMS.c.id == bindparam("id")))
    with migrated_db.read_statement() as conn:
        raw.all(conn, {"id": "x"})
        driver: Any = conn.driver_connection
    if migrated_db.is_sqlite:
        assert not driver.in_transaction
    else:
        import psycopg

        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_each_statement_sees_every_write_committed_before_it(migrated_db: Database) -> None:
    """The statement connection is kept between calls (per thread on SQLite): it must never
    keep a snapshot from one statement to the next."""
    raw = RawSelect(select(TEAMS.c.name).where(TEAMS.c.id == bindparam("id")))
    for i in range(3):
        with migrated_db.write() as s:
            if i == 0:
                s.execute(TEAMS.insert().values(id="t", name="v0", created_at=0))
            else:
                s.execute(TEAMS.update().where(TEAMS.c.id == "t").values(name=f"v{i}"))
        with migrated_db.read_statement() as conn:
            assert [r.name for r in raw.all(conn, {"id": "t"})] == [f"v{i}"]

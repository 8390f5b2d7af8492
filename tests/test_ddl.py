"""ensure_schema on a real PostgreSQL: a schema it made itself is current (no warning, no change), and a
column of a genuinely different type is reported, not touched."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline.db import transaction
from fitness_pipeline.ddl import ensure_schema
from tests.helpers import query

DDL_LOGGER = "fitness_pipeline.ddl"


def test_a_fresh_schema_is_current_on_the_second_call(db_conn: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=DDL_LOGGER)
    assert ensure_schema(db_conn).created_tables
    changes = ensure_schema(db_conn)
    assert not changes, changes
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []


def test_every_type_the_schema_uses_compares_equal_to_what_postgresql_reports(
        db_conn: Any, caplog: pytest.LogCaptureFixture) -> None:
    """One column per kind of type (and spelling) SQLAlchemy can compile, not only those schema.py uses today."""
    types: list[Any] = [
        sa.Time, sa.Time(timezone=True), sa.Date, sa.DateTime, sa.DateTime(timezone=True), sa.Numeric(20, 0),
        sa.Numeric, sa.Float, sa.Float(precision=24), sa.Double, sa.REAL, sa.Boolean, sa.Text, sa.String,
        sa.String(50), sa.CHAR(3), sa.Integer, sa.SmallInteger, sa.BigInteger, sa.Interval, sa.LargeBinary,
        sa.Uuid, pg.JSONB, pg.JSON, pg.INET, pg.ARRAY(sa.Integer), pg.ARRAY(sa.Text), pg.TIMESTAMP(precision=3),
    ]
    meta = sa.MetaData()
    table = sa.Table("every_type", meta, *(sa.Column(f"c{i}", t) for i, t in enumerate(types)))
    caplog.set_level(logging.INFO, logger=DDL_LOGGER)
    ensure_schema(db_conn, meta)
    assert not ensure_schema(db_conn, meta)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert len(query(db_conn, "SELECT column_name FROM information_schema.columns "
                              "WHERE table_name = 'every_type'")) == len(table.columns)


def test_a_really_different_type_without_a_safe_cast_still_warns_and_is_left_alone(
        db_conn: Any, caplog: pytest.LogCaptureFixture) -> None:
    from fitness_pipeline.schema import fitbit_weight

    with transaction(db_conn) as cur:  # record_time as text: no safe cast to time, so it stays text
        cur.execute("CREATE TABLE fitbit_weight (id NUMERIC(20) PRIMARY KEY, weight FLOAT NOT NULL, "
                    "record_date DATE NOT NULL, record_time TEXT)")
    caplog.set_level(logging.INFO, logger=DDL_LOGGER)
    changes = ensure_schema(db_conn, tables=[fitbit_weight])
    assert not changes.altered_columns
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["Column fitbit_weight.record_time is text, expected time: left as it is (migrate it by hand)"]
    assert query(db_conn, "SELECT udt_name FROM information_schema.columns WHERE table_name = 'fitbit_weight' "
                          "AND column_name = 'record_time'") == [("text",)]


def test_a_fresh_schema_is_current_through_psycopg2_too(postgres: Any, fitness_db: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Airflow 2's PostgresHook hands out psycopg2 connections; the type lookup runs on both drivers."""
    import psycopg2

    conn = psycopg2.connect(postgres.dsn(fitness_db))
    try:
        caplog.set_level(logging.INFO, logger=DDL_LOGGER)
        assert ensure_schema(conn).created_tables
        assert not ensure_schema(conn)
    finally:
        conn.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_the_ensure_schema_task_reports_every_kind_of_change(fitness_db: str) -> None:
    from fitness_pipeline.tasks.prepare import ensure_schema as ensure_schema_task

    first = ensure_schema_task()
    assert {"created_tables", "added_columns", "altered_columns", "created_indexes"} <= set(first)
    assert "strava_activity" in first["created_tables"]
    assert "ix_strava_activity_start_date" in first["created_indexes"]  # was dropped from the summary
    assert ensure_schema_task() == {key: [] for key in first}

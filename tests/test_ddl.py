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


def test_a_really_different_type_without_a_safe_cast_is_refused_with_what_to_do(db_conn: Any) -> None:
    from fitness_pipeline.ddl import SchemaError
    from fitness_pipeline.schema import fitbit_weight

    with transaction(db_conn) as cur:  # record_time as text: no safe cast to time
        cur.execute("CREATE TABLE fitbit_weight (id NUMERIC(20) PRIMARY KEY, weight FLOAT NOT NULL, "
                    "record_date DATE NOT NULL, record_time TEXT)")
    with pytest.raises(SchemaError) as raised:
        ensure_schema(db_conn, tables=[fitbit_weight])
    message = str(raised.value)
    # which table and column, what was found, what was expected, how to fix it
    assert "fitbit_weight.record_time is text, expected time" in message
    assert "ALTER TABLE fitbit_weight ALTER COLUMN record_time TYPE TIME WITHOUT TIME ZONE USING" in message
    # nothing was changed: not even the columns that could have been added
    assert query(db_conn, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'fitbit_weight'") \
        == [(4,)]


def seed_calories(db_conn: Any, rows: list[tuple[int, float, str]]) -> None:
    """The seed article's fitbit_calories (id primary key, record_date a timestamp) with ``rows``."""
    with transaction(db_conn) as cur:
        cur.execute("CREATE TABLE fitbit_calories (id BIGINT PRIMARY KEY, calories FLOAT, record_date TIMESTAMP, "
                    "last_time TIMESTAMP DEFAULT now())")
        for row in rows:
            cur.execute("INSERT INTO fitbit_calories (id, calories, record_date) VALUES (%s, %s, %s)", row)


def test_identical_duplicate_days_of_a_seed_table_are_merged_and_the_rest_upgraded(fitness_db: str,
                                                                                   db_conn: Any) -> None:
    from fitness_pipeline.tasks.prepare import ensure_schema as ensure_schema_task

    seed_calories(db_conn, [(1, 2100.0, "2024-03-01 00:00"), (2, 2100.0, "2024-03-01 12:00"),
                            (3, 1800.0, "2024-03-02 00:00")])
    report = ensure_schema_task()
    assert report["problems"] == {}
    assert report["removed_duplicates"] == ["fitbit_calories: 1 identical rows"]
    assert query(db_conn, "SELECT record_date::text, calories FROM fitbit_calories ORDER BY 1") == [
        ("2024-03-01", 2100.0), ("2024-03-02", 1800.0)]
    again = ensure_schema_task()
    assert again == {key: {} if key == "problems" else [] for key in report}  # idempotent


def test_a_schema_problem_of_one_source_leaves_it_alone_and_upgrades_the_others(fitness_db: str,
                                                                                 db_conn: Any) -> None:
    from fitness_pipeline.ddl import SchemaError
    from fitness_pipeline.tasks.prepare import check_source_schema
    from fitness_pipeline.tasks.prepare import ensure_schema as ensure_schema_task

    seed_calories(db_conn, [(1, 2100.0, "2024-03-01 00:00"), (2, 2300.0, "2024-03-01 12:00")])
    report = ensure_schema_task()
    # the views read columns the old table lacks: they wait for it, reported as problem "views"
    assert set(report["problems"]) == {"fitbit_calories", "views"}
    message = report["problems"]["fitbit_calories"]
    assert ("Table fitbit_calories: 1 value(s) of (athlete_id, record_date) appear on several rows that differ"
            in message)
    assert "2100" not in message and "2300" not in message  # no personal values
    assert "strava_activity" in report["created_tables"] and "fitbit_weight" in report["created_tables"]
    # the calorie table is as it was, its staging table was not made either
    assert query(db_conn, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'fitbit_calories'") \
        == [(4,)]
    assert query(db_conn, "SELECT to_regclass('stage_fitbit_calories') IS NULL") == [(True,)]

    check_source_schema("strava_activity", report)  # the others sync
    with pytest.raises(SchemaError, match="fitbit_calories: its tables could not be upgraded"):
        check_source_schema("fitbit_calories", report)
    # a person deletes the wrong row and clears the extract: it upgrades the table and goes on
    with transaction(db_conn) as cur:
        cur.execute("DELETE FROM fitbit_calories WHERE id = 2")
    check_source_schema("fitbit_calories", report)
    assert query(db_conn, "SELECT to_regclass('stage_fitbit_calories') IS NOT NULL") == [(True,)]


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
    assert ensure_schema_task() == {key: {} if key == "problems" else [] for key in first}

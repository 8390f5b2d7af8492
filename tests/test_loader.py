"""Schema and loader on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import psycopg2
import pytest

from fitness_pipeline.db import transaction
from fitness_pipeline.ddl import ensure_schema
from fitness_pipeline.loader import UpsertCounts, quarantine_records, upsert_rows
from fitness_pipeline.schema import metadata, strava_activity
from fitness_pipeline.transforms.records import QuarantineEntry
from fitness_pipeline.transforms.strava import strava_activity_row
from tests.helpers import query
from tests.test_strava_transform import activity


def rows(*ids: int, **changes: Any) -> list[dict[str, Any]]:
    return [strava_activity_row(activity(id=i, **changes)) for i in ids]


def upsert(conn: Any, batch: list[dict[str, Any]]) -> UpsertCounts:
    with transaction(conn) as cur:
        return upsert_rows(cur, strava_activity, batch)


def tuple_stats(conn: Any) -> tuple[int, int]:
    """(inserted, updated) tuples written to strava_activity, from the statistics collector."""
    query(conn, "SELECT pg_stat_force_next_flush()")
    return query(conn, "SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'strava_activity'")[0]


def snapshot(conn: Any) -> list[tuple[Any, ...]]:
    return query(conn, "SELECT id, xmin::text, name, distance, last_time, raw FROM strava_activity ORDER BY id")


def test_schema_is_created_once_and_idempotent(db_conn: Any) -> None:
    changes = ensure_schema(db_conn)
    assert set(changes.created_tables) == set(metadata.tables)
    assert not ensure_schema(db_conn)
    types = dict(query(db_conn, "SELECT column_name, data_type FROM information_schema.columns "
                                "WHERE table_name = 'strava_activity'"))
    assert types["name"] == "text"
    assert types["start_date"] == "timestamp with time zone"
    assert types["start_date_local"] == "timestamp without time zone"
    assert types["upload_id"] == "numeric"
    assert types["raw"] == "jsonb"


def test_insert_update_unchanged_counts_and_no_tuple_written(schema: Any) -> None:
    assert upsert(schema, rows(1, 2, 3)) == UpsertCounts(inserted=3, updated=0, unchanged=0)
    before = snapshot(schema)
    ins_before, upd_before = tuple_stats(schema)

    assert upsert(schema, rows(1, 2, 3)) == UpsertCounts(inserted=0, updated=0, unchanged=3)
    assert snapshot(schema) == before  # same xmin and last_time: no new tuple
    assert tuple_stats(schema) == (ins_before, upd_before)

    changed = rows(1, 2) + rows(3, name="Renamed") + rows(4)
    assert upsert(schema, changed) == UpsertCounts(inserted=1, updated=1, unchanged=2)
    after = {r[0]: r for r in snapshot(schema)}
    old = {r[0]: r for r in before}
    assert after[3][2] == "Renamed" and after[3][4] > old[3][4]  # last_time moved for the change only
    assert after[1] == old[1] and after[2] == old[2]
    assert tuple_stats(schema) == (ins_before + 1, upd_before + 1)


def test_duplicates_in_one_batch_last_one_wins(schema: Any) -> None:
    batch = rows(7, name="first") + rows(7, name="second")
    assert upsert(schema, batch) == UpsertCounts(inserted=1, updated=0, unchanged=0)
    assert query(schema, "SELECT name FROM strava_activity") == [("second",)]


def test_values_round_trip(schema: Any) -> None:
    upsert(schema, rows(5))
    (upload_id, start, local, raw), = query(
        schema, "SELECT upload_id, start_date, start_date_local, raw FROM strava_activity")
    assert upload_id == Decimal("987654321234567891234")
    assert start == dt.datetime(2018, 5, 2, 12, 15, 9, tzinfo=dt.UTC)
    assert local == dt.datetime(2018, 5, 2, 5, 15, 9)
    assert raw["upload_id"] == 987654321234567891234


def test_failed_load_leaves_the_table_as_it_was(schema: Any) -> None:
    upsert(schema, rows(1, 2))
    before = snapshot(schema)
    bad = rows(1, name="changed") + rows(9)
    bad[-1]["start_date"] = None  # NOT NULL: the statement fails after row 1 was updated
    with pytest.raises(Exception, match="start_date"):
        upsert(schema, bad)
    assert snapshot(schema) == before


def test_psycopg2_copy_path(postgres: Any, schema: Any, fitness_db: str) -> None:
    """Airflow 2's PostgresHook hands out psycopg2 connections: the loader must work on both."""
    conn = psycopg2.connect(postgres.dsn(fitness_db))
    try:
        tricky = rows(11, name="tab\there, newline\nand back\\slash", external_id=None)
        assert upsert(conn, tricky + rows(12)) == UpsertCounts(inserted=2)
        assert upsert(conn, tricky + rows(12)) == UpsertCounts(unchanged=2)
    finally:
        conn.close()
    assert query(schema, "SELECT name FROM strava_activity WHERE id = 11") == [
        ("tab\there, newline\nand back\\slash",)]


def test_quarantine_keeps_reason_and_counts_sightings(schema: Any) -> None:
    entries = [QuarantineEntry("42", "start_date is missing", '{"id": 42, "name": "nul \\u0000"}')]
    with transaction(schema) as cur:
        quarantine_records(cur, "strava_activity", entries)
    with transaction(schema) as cur:
        quarantine_records(cur, "strava_activity", entries)
    assert query(schema, "SELECT record_key, reason, times_seen, payload FROM quarantine") == [
        ("42", "start_date is missing", 2, '{"id": 42, "name": "nul \\u0000"}')]


SEED_DDL = """
CREATE TABLE strava_activity (
    id BIGINT PRIMARY KEY, owner INTEGER, activity_type VARCHAR(50), distance FLOAT, elapsed_time FLOAT,
    average_speed FLOAT, average_cadence FLOAT, average_heartrate FLOAT, name VARCHAR(50), utc_offset FLOAT,
    max_speed FLOAT, max_heartrate FLOAT, total_elevation_gain FLOAT, upload_id BIGINT, moving_time FLOAT,
    start_date TIMESTAMP, start_date_local TIMESTAMP, last_time TIMESTAMP DEFAULT now());
INSERT INTO strava_activity (id, owner, activity_type, distance, elapsed_time, name, moving_time, start_date,
    start_date_local, upload_id)
VALUES (1, 134815, 'Run', 5000, 1800.4, 'Seed run', 1700, '2020-01-01 08:00:00', '2020-01-01 09:00:00', 12);
"""


def test_seed_article_tables_are_upgraded_in_place(db_conn: Any) -> None:
    with transaction(db_conn) as cur:
        cur.execute(SEED_DDL)
    changes = ensure_schema(db_conn)
    assert "strava_activity.name: varchar -> text" in changes.altered_columns
    assert "strava_activity.start_date: timestamp -> timestamptz" in changes.altered_columns
    assert "strava_activity.raw" in changes.added_columns
    (name, start, elapsed, upload_id), = query(
        db_conn, "SELECT name, start_date, elapsed_time, upload_id FROM strava_activity")
    assert (name, elapsed, upload_id) == ("Seed run", 1800, 12)
    assert start == dt.datetime(2020, 1, 1, 8, tzinfo=dt.UTC)  # the seed's naive values were UTC
    assert not ensure_schema(db_conn)


def test_mark_deleted_then_restored_when_it_comes_back(schema: Any) -> None:
    from fitness_pipeline.loader import mark_deleted, merge_staged, stage_rows
    from fitness_pipeline.schema import STAGING

    upsert(schema, rows(1, 2, 3, 4, 5))
    everything = strava_activity.c.id > 0
    with transaction(schema) as cur:  # a listing that no longer has activity 3
        stage_rows(cur, strava_activity, "b1", rows(1, 2, 4, 5))
        assert merge_staged(cur, strava_activity, "b1") == UpsertCounts(unchanged=4)
        assert mark_deleted(cur, "strava_activity", strava_activity, "b1", everything, max_share=0.5) == 1
        cur.execute(f"DELETE FROM {STAGING['strava_activity'].name}")
    assert query(schema, "SELECT id FROM strava_activity WHERE deleted_at IS NOT NULL") == [(3,)]
    # back upstream, unchanged: restored and counted as an update
    assert upsert(schema, rows(3)) == UpsertCounts(updated=1)
    assert query(schema, "SELECT count(*) FROM strava_activity WHERE deleted_at IS NOT NULL") == [(0,)]


def test_mark_deleted_refuses_a_mass_deletion(schema: Any) -> None:
    from fitness_pipeline.loader import MassDeletionError, mark_deleted, stage_rows

    upsert(schema, rows(1, 2, 3, 4, 5, 6))
    with pytest.raises(MassDeletionError, match="4 of 6 rows"), transaction(schema) as cur:
        stage_rows(cur, strava_activity, "b2", rows(1, 2))  # the listing suddenly holds only two
        mark_deleted(cur, "strava_activity", strava_activity, "b2", strava_activity.c.id > 0, max_share=0.5)
    assert query(schema, "SELECT count(*) FROM strava_activity WHERE deleted_at IS NOT NULL") == [(0,)]


def test_unchanged_reload_dirties_no_page(schema: Any) -> None:
    """No tuple and no page written: unchanged rows are not even locked. Measured as WAL after a
    checkpoint (a dirtied page is then logged in full), against the fixed cost of one row."""
    batch = rows(*range(1, 501))
    upsert(schema, batch)

    def wal_of_reload(reload: list[dict[str, Any]]) -> int:
        with transaction(schema) as cur:
            cur.execute("CHECKPOINT")
        (before,), = query(schema, "SELECT pg_current_wal_insert_lsn()::text")
        assert upsert(schema, reload) == UpsertCounts(unchanged=len(reload))
        (wal,), = query(schema, "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)", (before,))
        return int(wal)

    one, all_rows = wal_of_reload(batch[:1]), wal_of_reload(batch)
    assert all_rows - one < 32 * 1024, f"{all_rows - one} bytes of WAL for 499 more unchanged rows"


def test_a_record_with_a_lone_surrogate_is_quarantined_in_the_database(schema: Any) -> None:
    from fitness_pipeline.transforms.records import transform_batch

    result = transform_batch([activity(id=7, name="a\ud800")], strava_activity_row)
    with transaction(schema) as cur:
        quarantine_records(cur, "strava_activity", result.quarantined)
    (key, reason, payload), = query(schema, "SELECT record_key, reason, payload FROM quarantine")
    assert (key, reason) == ("7", "contains invalid Unicode (an unpaired surrogate)")
    assert "\\ud800" in payload


def test_seed_calories_table_keyed_by_id_gets_a_unique_date_for_the_upsert(db_conn: Any) -> None:
    from fitness_pipeline.schema import fitbit_calories

    with transaction(db_conn) as cur:
        cur.execute("CREATE TABLE fitbit_calories (id BIGINT PRIMARY KEY, calories FLOAT, record_date TIMESTAMP, "
                    "last_time TIMESTAMP DEFAULT now()); INSERT INTO fitbit_calories VALUES (1, 2000, '2020-01-01')")
    changes = ensure_schema(db_conn)
    # keyed by (athlete_id, record_date) now: the seed's key on id alone is unique per athlete
    assert "fitbit_calories: unique (id) is now unique per athlete" in changes.altered_tables
    assert "uq_fitbit_calories_athlete_id_id" in changes.created_indexes
    assert query(db_conn, "SELECT a.attname FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid "
                          "AND a.attnum = ANY(x.indkey) WHERE x.indrelid = 'fitbit_calories'::regclass "
                          "AND x.indisprimary ORDER BY 1") == [("athlete_id",), ("record_date",)]
    assert "fitbit_calories.record_date: timestamp -> date" in changes.altered_columns
    row = {"record_date": dt.date(2026, 1, 1), "id": 1767225600, "calories": 1800.0, "raw": "{}"}
    with transaction(db_conn) as cur:
        assert upsert_rows(cur, fitbit_calories, [row]) == UpsertCounts(inserted=1)
    with transaction(db_conn) as cur:
        assert upsert_rows(cur, fitbit_calories, [row]) == UpsertCounts(unchanged=1)
    assert not ensure_schema(db_conn)


# --- issue 8: faster paths that must keep the same results ----------------------------------------------


def staging_state(conn: Any) -> tuple[str, list[str]]:
    (persistence, options), = query(conn, "SELECT relpersistence, coalesce(reloptions, '{}') FROM pg_class "
                                          "WHERE relname = 'stage_strava_activity'")
    return persistence, list(options)


def test_staging_tables_are_unlogged_with_inline_rows(schema: Any) -> None:
    from fitness_pipeline.ddl import STAGING_TOAST_TUPLE_TARGET

    assert staging_state(schema) == ("u", [f"toast_tuple_target={STAGING_TOAST_TUPLE_TARGET}"])
    (logged,), = query(schema, "SELECT count(*) FROM pg_class WHERE relname LIKE 'stage\\_%' AND relkind = 'r' "
                               "AND relpersistence <> 'u'")
    assert logged == 0


def test_a_logged_staging_table_becomes_unlogged_in_place_keeping_its_rows(schema: Any) -> None:
    from fitness_pipeline.loader import merge_staged, stage_rows, staged_count
    from fitness_pipeline.schema import STAGING

    staging = STAGING["strava_activity"]
    with transaction(schema) as cur:  # an existing user's table, from before issue 8, with a staged batch
        cur.execute("ALTER TABLE stage_strava_activity SET LOGGED, RESET (toast_tuple_target)")
        stage_rows(cur, strava_activity, "old-batch", rows(1, 2, 3))
    assert staging_state(schema) == ("p", [])
    changes = ensure_schema(schema)
    assert changes.altered_tables == ["stage_strava_activity: logged -> unlogged, toast_tuple_target=8160"]
    assert staging_state(schema) == ("u", ["toast_tuple_target=8160"])
    assert not ensure_schema(schema)  # idempotent
    with transaction(schema) as cur:
        assert staged_count(cur, staging, "old-batch") == 3
        assert staged_count(cur, staging, "other-batch") == 0
        assert merge_staged(cur, strava_activity, "old-batch") == UpsertCounts(inserted=3)


def test_merge_staged_last_wins_with_and_without_duplicates(schema: Any) -> None:
    from fitness_pipeline.loader import delete_staged, merge_staged, stage_rows
    from fitness_pipeline.schema import STAGING

    with transaction(schema) as cur:  # no duplicate key: the merge skips the sort
        stage_rows(cur, strava_activity, "b1", rows(1, 2, 3))
        assert merge_staged(cur, strava_activity, "b1") == UpsertCounts(inserted=3)
        delete_staged(cur, STAGING["strava_activity"], "b1")
    with transaction(schema) as cur:  # duplicates across two chunks (start_seq): the highest seq wins
        staged = stage_rows(cur, strava_activity, "b2", rows(2, name="first") + rows(4, name="first"))
        stage_rows(cur, strava_activity, "b2", rows(2, 4, name="second") + rows(1), start_seq=staged)
        stage_rows(cur, strava_activity, "b3", rows(4, name="another batch"))
        assert merge_staged(cur, strava_activity, "b2") == UpsertCounts(inserted=1, updated=1, unchanged=1)
    assert query(schema, "SELECT id, name FROM strava_activity ORDER BY id") == [
        (1, "Happy Friday"), (2, "second"), (3, "Happy Friday"), (4, "second")]
    with transaction(schema) as cur:
        assert merge_staged(cur, strava_activity, "no-such-batch") == UpsertCounts()


def test_a_first_load_into_an_empty_table_keeps_the_last_duplicate_and_counts_inserts(schema: Any) -> None:
    """merge_staged into an empty table is a plain INSERT ... SELECT: still last-wins, exact counts."""
    from fitness_pipeline.loader import merge_staged, stage_rows

    with transaction(schema) as cur:
        staged = stage_rows(cur, strava_activity, "first", rows(1, 2, name="early"))
        stage_rows(cur, strava_activity, "first", rows(1, name="late") + rows(3), start_seq=staged)
        assert merge_staged(cur, strava_activity, "first") == UpsertCounts(inserted=3)
    assert query(schema, "SELECT id, name FROM strava_activity ORDER BY id") == [
        (1, "late"), (2, "early"), (3, "Happy Friday")]
    with transaction(schema) as cur:  # the table is not empty now: the same batch merges, unchanged
        assert merge_staged(cur, strava_activity, "first") == UpsertCounts(unchanged=3)


def test_upsert_rows_mixes_new_changed_unchanged_and_duplicates(schema: Any) -> None:
    upsert(schema, rows(1, 2, 3))
    before = {r[0]: r for r in snapshot(schema)}
    ins_before, upd_before = tuple_stats(schema)
    batch = rows(1) + rows(2, name="old") + rows(5, name="old") + rows(2, 5, name="new") + rows(6)
    assert upsert(schema, batch) == UpsertCounts(inserted=2, updated=1, unchanged=1)
    after = {r[0]: r for r in snapshot(schema)}
    assert after[1] == before[1] and after[3] == before[3]
    assert after[2][2] == after[5][2] == "new"
    assert tuple_stats(schema) == (ins_before + 2, upd_before + 1)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_upsert_rows_falls_back_to_the_merge_when_a_new_key_appears_meanwhile(
        schema: Any, postgres: Any, fitness_db: str, monkeypatch: pytest.MonkeyPatch, driver: str) -> None:
    """A key inserted by another transaction between the key check and the COPY: the COPY's unique
    violation is rolled back to its savepoint and every row is merged, in the same transaction."""
    from fitness_pipeline import loader

    upsert(schema, rows(1, 2))
    monkeypatch.setattr(loader, "_existing_keys", lambda cursor, target, keys: set())  # "none there yet"
    conn = psycopg2.connect(postgres.dsn(fitness_db)) if driver == "psycopg2" else schema
    try:
        with transaction(conn) as cur:
            cur.execute("SELECT 1")
            assert upsert_rows(cur, strava_activity, rows(1) + rows(2, name="x") + rows(3)) == UpsertCounts(
                inserted=1, updated=1, unchanged=1)
            cur.execute("SELECT count(*) FROM strava_activity")  # the transaction is still usable
            assert cur.fetchone()[0] == 3
    finally:
        if conn is not schema:
            conn.close()
    assert query(schema, "SELECT id, name FROM strava_activity ORDER BY id") == [
        (1, "Happy Friday"), (2, "x"), (3, "Happy Friday")]


def test_upsert_rows_copies_new_rows_straight_in_on_psycopg2(postgres: Any, schema: Any, fitness_db: str) -> None:
    from fitness_pipeline.schema import fitbit_weight

    conn = psycopg2.connect(postgres.dsn(fitness_db))
    try:
        weight = {"id": Decimal("98765432109876543210"), "weight": 70.5, "bmi": None, "fat": None,
                  "record_date": dt.date(2026, 1, 2), "record_time": dt.time(7, 30), "platform": "FITBIT",
                  "measured_at": dt.datetime(2026, 1, 2, 6, 30, tzinfo=dt.UTC), "utc_offset": 3600,
                  "recording_method": "MANUAL", "data_point_name": "users/me/dataTypes/weight/dataPoints/1",
                  "raw": '{"a": 1}'}
        with transaction(conn) as cur:
            assert upsert_rows(cur, fitbit_weight, [weight]) == UpsertCounts(inserted=1)
        with transaction(conn) as cur:
            assert upsert_rows(cur, fitbit_weight, [weight, {**weight, "weight": 70.0}]) == UpsertCounts(updated=1)
    finally:
        conn.close()
    assert query(schema, "SELECT id, weight FROM fitbit_weight") == [(Decimal("98765432109876543210"), 70.0)]

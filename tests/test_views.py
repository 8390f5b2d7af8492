"""The SQL views (fitness_pipeline.views) on a real PostgreSQL: local dates and ISO weeks, deleted rows,
days without logs, hand-computed sums, upgrades by ensure_schema, what the health views expose."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import pytest
import sqlalchemy as sa

from fitness_pipeline.db import execute, transaction
from fitness_pipeline.ddl import ensure_schema
from fitness_pipeline.schema import (
    api_rate_limit,
    fitbit_calories,
    fitbit_weight,
    oauth_token,
    quarantine,
    strava_activity,
    sync_run,
)
from fitness_pipeline.views import VIEWS, token_health
from tests.helpers import query

UTC = dt.UTC
D = dt.date
_ids = iter(range(1, 10_000))


def activity(local: dt.datetime, utc: dt.datetime, sport: str = "Run", km: float = 10.0, moving: int = 3000,
             elevation: float = 50.0, deleted: bool = False, **extra: Any) -> dict[str, Any]:
    """A strava_activity row started at wall clock ``local`` (naive) = instant ``utc``."""
    return {"id": next(_ids), "sport_type": sport, "activity_type": sport, "name": f"{sport} {local:%a}",
            "distance": km * 1000, "moving_time": moving, "elapsed_time": moving + 60,
            "total_elevation_gain": elevation, "start_date": utc, "start_date_local": local,
            "raw": json.dumps({"id": 0}), "deleted_at": utc if deleted else None, **extra}


def weighin(day: dt.date, kg: float, deleted: bool = False) -> dict[str, Any]:
    measured = dt.datetime.combine(day, dt.time(7), UTC)
    point = next(_ids)
    return {"id": point, "weight": kg, "record_date": day, "record_time": dt.time(7), "measured_at": measured,
            "data_point_name": f"users/me/dataTypes/weight/dataPoints/{point}", "raw": json.dumps({}),
            "deleted_at": measured if deleted else None}


def meals(day: dt.date, kcal: float, deleted: bool = False) -> dict[str, Any]:
    midnight = dt.datetime.combine(day, dt.time(), UTC)
    return {"record_date": day, "id": int(midnight.timestamp()), "calories": kcal, "raw": json.dumps({}),
            "deleted_at": midnight if deleted else None}


def insert(conn: Any, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    with transaction(conn) as cur:
        for row in rows:
            execute(cur, sa.insert(table).values(**row))


def rows_of(conn: Any, sql: str, params: Any = None, time_zone: str | None = None) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        if time_zone:  # the session's zone must not matter: the views use local dates only
            cur.execute(f"SET TIME ZONE '{time_zone}'")
        cur.execute(sql, params)
        names = [c[0] for c in cur.description]
        result = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    conn.rollback()
    return result


def columns_of(conn: Any, view: str) -> list[str]:
    return [name for (name,) in query(conn, "SELECT column_name FROM information_schema.columns "
                                            "WHERE table_name = %s ORDER BY ordinal_position", (view,))]


# --- local dates and weeks ------------------------------------------------------------------------------

@pytest.mark.parametrize("time_zone", ["UTC", "America/Los_Angeles", "Asia/Tokyo", "Pacific/Kiritimati"])
def test_weeks_follow_the_athletes_local_date_not_utc(schema: Any, time_zone: str) -> None:
    insert(schema, strava_activity, [
        # Los Angeles, Sunday 2024-01-07 23:30 local = Monday 07:30 UTC: belongs to the week of Monday 2024-01-01
        activity(dt.datetime(2024, 1, 7, 23, 30), dt.datetime(2024, 1, 8, 7, 30, tzinfo=UTC), km=5,
                 timezone="(GMT-08:00) America/Los_Angeles", utc_offset=-28800),
        # Tokyo, Monday 2024-01-15 07:00 local = Sunday 22:00 UTC: belongs to the week of that Monday
        activity(dt.datetime(2024, 1, 15, 7), dt.datetime(2024, 1, 14, 22, tzinfo=UTC), km=8,
                 timezone="(GMT+09:00) Asia/Tokyo", utc_offset=32400),
    ])
    activities = rows_of(schema, "SELECT day, week_start, distance_km FROM training_activity ORDER BY day",
                         time_zone=time_zone)
    assert activities == [{"day": D(2024, 1, 7), "week_start": D(2024, 1, 1), "distance_km": 5.0},
                          {"day": D(2024, 1, 15), "week_start": D(2024, 1, 15), "distance_km": 8.0}]
    weeks = rows_of(schema, "SELECT week_start, activities, distance_km FROM training_week ORDER BY 1",
                    time_zone=time_zone)
    assert weeks == [{"week_start": D(2024, 1, 1), "activities": 1, "distance_km": 5.0},
                     {"week_start": D(2024, 1, 15), "activities": 1, "distance_km": 8.0}]
    days = rows_of(schema, "SELECT day, week_start, activities FROM training_day ORDER BY 1", time_zone=time_zone)
    assert days == [{"day": D(2024, 1, 7), "week_start": D(2024, 1, 1), "activities": 1},
                    {"day": D(2024, 1, 15), "week_start": D(2024, 1, 15), "activities": 1}]
    assert rows_of(schema, "SELECT week_start, sport_type, activities FROM training_week_sport ORDER BY 1",
                   time_zone=time_zone) == [
        {"week_start": D(2024, 1, 1), "sport_type": "Run", "activities": 1},
        {"week_start": D(2024, 1, 15), "sport_type": "Run", "activities": 1}]
    # what the calendar asks: a range of days / weeks
    assert [r["day"] for r in rows_of(schema, "SELECT day FROM training_day WHERE day BETWEEN %s AND %s",
                                      (D(2024, 1, 8), D(2024, 1, 15)), time_zone=time_zone)] == [D(2024, 1, 15)]
    assert rows_of(schema, "SELECT week_start FROM training_week WHERE week_start BETWEEN %s AND %s",
                   (D(2024, 1, 2), D(2024, 1, 14)), time_zone=time_zone) == []


def test_an_activity_at_0130_on_a_dst_change_counts_once_on_its_local_date(schema: Any) -> None:
    insert(schema, strava_activity, [
        # Los Angeles, clocks forward at 02:00 on Sunday 2024-03-10: 01:30 PST = 09:30 UTC
        activity(dt.datetime(2024, 3, 10, 1, 30), dt.datetime(2024, 3, 10, 9, 30, tzinfo=UTC), km=6),
        # clocks back at 02:00 on Sunday 2024-11-03: 01:30 happens twice (PDT 08:30 UTC, then PST 09:30 UTC)
        activity(dt.datetime(2024, 11, 3, 1, 30), dt.datetime(2024, 11, 3, 8, 30, tzinfo=UTC), km=3),
        activity(dt.datetime(2024, 11, 3, 1, 30), dt.datetime(2024, 11, 3, 9, 30, tzinfo=UTC), km=4),
        # Berlin, clocks back at 03:00 on Sunday 2024-10-27: 01:30 CEST = 23:30 UTC the day before
        activity(dt.datetime(2024, 10, 27, 1, 30), dt.datetime(2024, 10, 26, 23, 30, tzinfo=UTC), km=7),
    ])
    for zone in ("UTC", "America/Los_Angeles", "Europe/Berlin"):
        days = rows_of(schema, "SELECT day, week_start, activities, distance_km FROM training_day ORDER BY 1",
                       time_zone=zone)
        assert days == [
            {"day": D(2024, 3, 10), "week_start": D(2024, 3, 4), "activities": 1, "distance_km": 6.0},
            {"day": D(2024, 10, 27), "week_start": D(2024, 10, 21), "activities": 1, "distance_km": 7.0},
            {"day": D(2024, 11, 3), "week_start": D(2024, 10, 28), "activities": 2, "distance_km": 7.0},
        ], zone


# --- what counts ------------------------------------------------------------------------------------------

def test_deleted_rows_are_excluded_everywhere(schema: Any) -> None:
    monday = D(2024, 5, 6)
    insert(schema, strava_activity, [
        activity(dt.datetime(2024, 5, 6, 7), dt.datetime(2024, 5, 6, 5, tzinfo=UTC), km=10),
        activity(dt.datetime(2024, 5, 7, 7), dt.datetime(2024, 5, 7, 5, tzinfo=UTC), km=99, deleted=True),
        activity(dt.datetime(2024, 5, 20, 7), dt.datetime(2024, 5, 20, 5, tzinfo=UTC), km=99, deleted=True),
    ])
    insert(schema, fitbit_weight, [weighin(monday, 80.0), weighin(monday, 99.0, deleted=True),
                                   weighin(D(2024, 5, 21), 99.0, deleted=True)])
    insert(schema, fitbit_calories, [meals(monday, 2000), meals(D(2024, 5, 7), 9999, deleted=True),
                                     meals(D(2024, 5, 22), 9999, deleted=True)])
    assert [r["distance_km"] for r in rows_of(schema, "SELECT * FROM training_activity")] == [10.0]
    assert rows_of(schema, "SELECT day, activities, distance_km, weight_kg, weighins, kcal FROM training_day") == [
        {"day": monday, "activities": 1, "distance_km": 10.0, "weight_kg": 80.0, "weighins": 1, "kcal": 2000.0}]
    assert rows_of(schema, "SELECT week_start, activities, avg_weight_kg, avg_kcal, logged_days "
                           "FROM training_week") == [
        {"week_start": monday, "activities": 1, "avg_weight_kg": 80.0, "avg_kcal": 2000.0, "logged_days": 1}]
    assert rows_of(schema, "SELECT week_start, activities FROM training_week_sport") == [
        {"week_start": monday, "activities": 1}]


def test_days_without_a_nutrition_log_have_no_kcal_and_the_weekly_mean_skips_them(schema: Any) -> None:
    insert(schema, strava_activity, [activity(dt.datetime(2024, 5, 8, 18), dt.datetime(2024, 5, 8, 16, tzinfo=UTC))])
    insert(schema, fitbit_calories, [meals(D(2024, 5, 6), 2000), meals(D(2024, 5, 7), 2600)])
    days = rows_of(schema, "SELECT day, kcal FROM training_day ORDER BY day")
    assert days == [{"day": D(2024, 5, 6), "kcal": 2000.0}, {"day": D(2024, 5, 7), "kcal": 2600.0},
                    {"day": D(2024, 5, 8), "kcal": None}]  # null, not 0
    assert rows_of(schema, "SELECT avg_kcal, logged_days FROM training_week") == [
        {"avg_kcal": 2300.0, "logged_days": 2}]  # (2000 + 2600) / 2, not / 3 or / 7
    # a day with nothing at all is no row
    assert rows_of(schema, "SELECT count(*) AS n FROM training_day WHERE day = '2024-05-09'") == [{"n": 0}]


def test_numbers_equal_hand_computed_sums_for_a_small_athlete(schema: Any) -> None:
    """One week (Monday 2024-06-03) and a bit of the next, every number worked out by hand."""
    insert(schema, strava_activity, [
        activity(dt.datetime(2024, 6, 3, 7), dt.datetime(2024, 6, 3, 5, tzinfo=UTC), "Run", 10.0, 3000, 80.0,
                 average_heartrate=150.0),
        activity(dt.datetime(2024, 6, 3, 18), dt.datetime(2024, 6, 3, 16, tzinfo=UTC), "Ride", 40.0, 5400, 300.0),
        activity(dt.datetime(2024, 6, 5, 6), dt.datetime(2024, 6, 5, 4, tzinfo=UTC), "TrailRun", 12.5, 4500, 600.0),
        activity(dt.datetime(2024, 6, 9, 9), dt.datetime(2024, 6, 9, 7, tzinfo=UTC), "Swim", 2.0, 2400, 0.0),
        activity(dt.datetime(2024, 6, 9, 10), dt.datetime(2024, 6, 9, 8, tzinfo=UTC), "WeightTraining", 0.0, 1800,
                 0.0),
        activity(dt.datetime(2024, 6, 10, 7), dt.datetime(2024, 6, 10, 5, tzinfo=UTC), "Run", 5.0, 1500, 20.0),
    ])
    insert(schema, fitbit_weight, [weighin(D(2024, 6, 3), 80.0), weighin(D(2024, 6, 3), 80.4),
                                   weighin(D(2024, 6, 6), 79.0), weighin(D(2024, 6, 11), 78.5)])
    insert(schema, fitbit_calories, [meals(D(2024, 6, 3), 2500), meals(D(2024, 6, 4), 2100),
                                     meals(D(2024, 6, 9), 1900), meals(D(2024, 6, 12), 2200)])

    paces = {r["sport_type"]: r["pace_s_per_km"] for r in rows_of(schema, "SELECT * FROM training_activity")
             if r["day"] < D(2024, 6, 10)}
    assert paces == {"Run": 300.0, "Ride": None, "TrailRun": 360.0, "Swim": None, "WeightTraining": None}
    assert rows_of(schema, "SELECT average_heartrate, moving_time_s, elapsed_time_s, elevation_m "
                           "FROM training_activity WHERE day = '2024-06-03' AND sport_type = 'Run'") == [
        {"average_heartrate": 150.0, "moving_time_s": 3000, "elapsed_time_s": 3060, "elevation_m": 80.0}]

    days = {r["day"]: r for r in rows_of(schema, "SELECT * FROM training_day")}
    assert sorted(days) == [D(2024, 6, d) for d in (3, 4, 5, 6, 9, 10, 11, 12)]
    assert days[D(2024, 6, 3)] == {"day": D(2024, 6, 3), "week_start": D(2024, 6, 3), "activities": 2,
                                   "distance_km": 50.0, "moving_time_s": 8400, "elevation_m": 380.0,
                                   "weight_kg": pytest.approx(80.2), "weighins": 2, "kcal": 2500.0, "athlete_id": 1}
    assert days[D(2024, 6, 4)] == {"day": D(2024, 6, 4), "week_start": D(2024, 6, 3), "activities": 0,
                                   "distance_km": 0, "moving_time_s": 0, "elevation_m": 0,
                                   "weight_kg": None, "weighins": 0, "kcal": 2100.0, "athlete_id": 1}
    assert (days[D(2024, 6, 6)]["weight_kg"], days[D(2024, 6, 6)]["kcal"]) == (79.0, None)
    assert days[D(2024, 6, 9)]["activities"] == 2 and days[D(2024, 6, 9)]["moving_time_s"] == 4200

    weeks = rows_of(schema, "SELECT * FROM training_week ORDER BY week_start")
    assert weeks == [
        {"week_start": D(2024, 6, 3), "activities": 5, "distance_km": 64.5, "moving_time_s": 17100,
         "elevation_m": 980.0, "avg_weight_kg": pytest.approx((80.0 + 80.4 + 79.0) / 3), "weighins": 3,
         "avg_kcal": pytest.approx((2500 + 2100 + 1900) / 3), "logged_days": 3, "athlete_id": 1},
        {"week_start": D(2024, 6, 10), "activities": 1, "distance_km": 5.0, "moving_time_s": 1500,
         "elevation_m": 20.0, "avg_weight_kg": 78.5, "weighins": 1, "avg_kcal": 2200.0, "logged_days": 1,
         "athlete_id": 1},
    ]
    sports = rows_of(schema, "SELECT sport_type, activities, distance_km, moving_time_s, elevation_m "
                             "FROM training_week_sport WHERE week_start = '2024-06-03' ORDER BY sport_type")
    assert sports == [
        {"sport_type": "Ride", "activities": 1, "distance_km": 40.0, "moving_time_s": 5400, "elevation_m": 300.0},
        {"sport_type": "Run", "activities": 1, "distance_km": 10.0, "moving_time_s": 3000, "elevation_m": 80.0},
        {"sport_type": "Swim", "activities": 1, "distance_km": 2.0, "moving_time_s": 2400, "elevation_m": 0.0},
        {"sport_type": "TrailRun", "activities": 1, "distance_km": 12.5, "moving_time_s": 4500,
         "elevation_m": 600.0},
        {"sport_type": "WeightTraining", "activities": 1, "distance_km": 0.0, "moving_time_s": 1800,
         "elevation_m": 0.0},
    ]


def test_an_activity_of_the_seed_without_sport_type_falls_back_to_its_type(schema: Any) -> None:
    insert(schema, strava_activity, [activity(dt.datetime(2024, 6, 3, 7), dt.datetime(2024, 6, 3, 5, tzinfo=UTC),
                                              sport=None, activity_type="Run")])
    assert rows_of(schema, "SELECT sport_type, pace_s_per_km FROM training_activity") == [
        {"sport_type": "Run", "pace_s_per_km": 300.0}]


# --- ensure_schema ----------------------------------------------------------------------------------------

def test_ensure_schema_creates_the_views_once(db_conn: Any) -> None:
    changes = ensure_schema(db_conn)
    assert changes.views == [f"{v.name}: created" for v in VIEWS]
    again = ensure_schema(db_conn)
    assert not again and again.views == []
    for view in VIEWS:
        assert columns_of(db_conn, view.name) == view.columns
    comments = dict(query(db_conn, "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
                                   "WHERE c.relkind = 'v' AND c.relnamespace = current_schema()::regnamespace"))
    assert comments == {v.name: v.comment for v in VIEWS}


def test_an_old_view_definition_is_replaced_in_place(schema: Any) -> None:
    insert(schema, fitbit_calories, [meals(D(2024, 6, 3), 2500)])
    with transaction(schema) as cur:  # an older release's training_week: activities only, fewer columns
        cur.execute("DROP VIEW training_week")
        cur.execute("CREATE VIEW training_week AS SELECT week_start, count(*) AS activities, "
                    "sum(distance_km) AS distance_km, sum(moving_time_s) AS moving_time_s, "
                    "sum(elevation_m) AS elevation_m FROM training_activity GROUP BY week_start")
        # a BI user's own view on it: replacing in place keeps it
        cur.execute("CREATE VIEW my_dashboard AS SELECT week_start, activities FROM training_week")
    changes = ensure_schema(schema)
    assert changes.views == ["training_week: replaced"]
    assert rows_of(schema, "SELECT * FROM my_dashboard") == [{"week_start": D(2024, 6, 3), "activities": 0}]
    assert columns_of(schema, "training_week") == next(v.columns for v in VIEWS if v.name == "training_week")
    assert rows_of(schema, "SELECT avg_kcal FROM training_week") == [{"avg_kcal": 2500.0}]
    assert not ensure_schema(schema)


def test_a_view_whose_columns_changed_is_recreated_with_the_views_reading_it(schema: Any) -> None:
    with transaction(schema) as cur:  # an older training_activity with other columns, and a view of ours on it
        cur.execute("DROP VIEW training_week_sport, training_week, training_day, training_activity")
        cur.execute("CREATE VIEW training_activity AS SELECT 1::bigint AS id, 2 AS old_column")
        cur.execute("CREATE VIEW training_day AS SELECT id FROM training_activity")
    changes = ensure_schema(schema)
    assert changes.views == ["training_activity: recreated", "training_day: recreated", "training_week: created",
                             "training_week_sport: created"]
    for view in VIEWS:
        assert columns_of(schema, view.name) == view.columns
    assert not ensure_schema(schema)


def test_a_recreated_view_keeps_its_grants(schema: Any, fitness_db: str) -> None:
    """A BI tool's read-only role was granted our views: dropping and creating one again must not lose it."""
    role = f"bi_{fitness_db}"
    with transaction(schema) as cur:
        cur.execute(f"CREATE ROLE {role}")
        cur.execute(f"GRANT SELECT ON training_activity, training_day, training_week TO {role}")
        cur.execute("DROP VIEW training_week_sport, training_week, training_day, training_activity")
        cur.execute("CREATE VIEW training_activity AS SELECT 1::bigint AS id, 2 AS old_column")
        cur.execute(f"GRANT SELECT ON training_activity TO {role}")
        cur.execute("CREATE VIEW training_day AS SELECT id FROM training_activity")
        cur.execute(f"GRANT SELECT ON training_day TO {role} WITH GRANT OPTION")
    try:
        changes = ensure_schema(schema)
        assert changes.views[:2] == ["training_activity: recreated", "training_day: recreated"]
        granted = query(schema, "SELECT table_name, privilege_type, is_grantable FROM "
                                "information_schema.role_table_grants WHERE grantee = %s ORDER BY 1", (role,))
        assert granted == [("training_activity", "SELECT", "NO"), ("training_day", "SELECT", "YES")]
    finally:
        with transaction(schema) as cur:
            cur.execute(f"DROP OWNED BY {role}")
            cur.execute(f"DROP ROLE {role}")


def test_a_view_of_someone_elses_on_a_view_that_must_be_recreated_stops_the_upgrade_with_a_message(
        schema: Any) -> None:
    from fitness_pipeline.ddl import DependentViewError

    with transaction(schema) as cur:
        cur.execute("DROP VIEW training_week_sport, training_week, training_day, training_activity")
        cur.execute("CREATE VIEW training_activity AS SELECT 1::bigint AS id, 2 AS old_column")
        cur.execute("CREATE VIEW my_dashboard AS SELECT id FROM training_activity")
    with pytest.raises(DependentViewError, match="my_dashboard read training_activity"):
        ensure_schema(schema)
    schema.rollback()
    # untouched: the transaction rolled back, the old training_activity and the user's view are still there
    assert query(schema, "SELECT id FROM my_dashboard") == [(1,)]
    assert query(schema, "SELECT old_column FROM training_activity") == [(2,)]


def test_a_column_type_upgrade_under_the_views_drops_and_recreates_them(schema: Any) -> None:
    """PostgreSQL refuses to retype a column a view reads: ensure_schema takes its views down for it."""
    with transaction(schema) as cur:  # the seed's float seconds, under today's views
        cur.execute(f"DROP VIEW {', '.join(v.name for v in reversed(VIEWS))}")
        cur.execute("ALTER TABLE strava_activity ALTER COLUMN moving_time TYPE float8")
    ensure_schema(schema, tables=[], views=VIEWS)  # the views over the old column
    assert query(schema, "SELECT data_type FROM information_schema.columns WHERE table_name = 'training_activity' "
                         "AND column_name = 'moving_time_s'") == [("double precision",)]
    changes = ensure_schema(schema)
    assert changes.altered_columns == ["strava_activity.moving_time: float8 -> int4"]
    assert sorted(changes.views) == sorted(f"{v.name}: created" for v in VIEWS)
    assert query(schema, "SELECT data_type FROM information_schema.columns WHERE table_name = 'training_activity' "
                         "AND column_name = 'moving_time_s'") == [("integer",)]
    assert not ensure_schema(schema)


def test_views_are_current_through_psycopg2_too(schema: Any, postgres: Any, fitness_db: str) -> None:
    import psycopg2

    conn = psycopg2.connect(postgres.dsn(fitness_db))
    try:
        assert not ensure_schema(conn)
    finally:
        conn.close()


# --- health views ---------------------------------------------------------------------------------------

def test_token_health_exposes_no_token(schema: Any) -> None:
    assert columns_of(schema, "token_health") == ["token_key", "conn_type", "conn_id", "refreshed_at", "expires_at",
                                                  "athlete_id"]
    assert token_health.columns == columns_of(schema, "token_health")
    refreshed, expires = dt.datetime(2024, 6, 3, 5, tzinfo=UTC), dt.datetime(2024, 6, 3, 11, tzinfo=UTC)
    insert(schema, oauth_token, [{"token_key": "strava:strava_default", "refresh_token": "r-secret",
                                  "access_token": "a-secret", "expires_at": expires, "seed_fingerprint": "f-secret",
                                  "updated_at": refreshed},
                                 {"token_key": "strava:strava_default:athlete-2", "refresh_token": "r2-secret",
                                  "access_token": None, "expires_at": None, "seed_fingerprint": "f2-secret",
                                  "updated_at": refreshed, "athlete_id": 2}])
    rows = rows_of(schema, "SELECT * FROM token_health ORDER BY token_key")
    assert rows == [{"token_key": "strava:strava_default", "conn_type": "strava", "conn_id": "strava_default",
                     "refreshed_at": refreshed, "expires_at": expires, "athlete_id": 1},
                    {"token_key": "strava:strava_default:athlete-2", "conn_type": "strava",
                     "conn_id": "strava_default", "refreshed_at": refreshed, "expires_at": None, "athlete_id": 2}]
    assert "secret" not in repr(rows)


def test_sync_health_shows_the_latest_run_per_source_and_the_quarantine(schema: Any) -> None:
    now = dt.datetime.now(UTC)

    def run(batch: str, source: str, ago: dt.timedelta, inserted: int) -> dict[str, Any]:
        return {"batch_id": batch, "source": source, "window_start": now - ago - dt.timedelta(hours=73),
                "window_end": now - ago, "extracted": inserted + 2, "quarantined": 1, "inserted": inserted,
                "updated": 1, "unchanged": 0, "deleted": 0, "finished_at": now - ago}

    insert(schema, sync_run, [run("a/strava_activity", "strava_activity", dt.timedelta(hours=30), 5),
                              run("b/strava_activity", "strava_activity", dt.timedelta(hours=2), 7),
                              run("c/strava_activity", "strava_activity", dt.timedelta(hours=1), 3),
                              run("b/fitbit_weight", "fitbit_weight", dt.timedelta(days=3), 4)])
    insert(schema, quarantine, [{"source": "strava_activity", "record_key": "1", "reason": "bad", "payload": "{}"},
                                {"source": "fitbit_calories", "record_key": "2", "reason": "bad", "payload": "{}"},
                                {"source": "fitbit_calories", "record_key": "3", "reason": "bad", "payload": "{}"}])
    assert "payload" not in columns_of(schema, "sync_health")
    health = {r["source"]: r for r in rows_of(schema, "SELECT * FROM sync_health")}
    assert set(health) == {"strava_activity", "fitbit_weight", "fitbit_calories"}
    strava = health["strava_activity"]
    assert (strava["last_batch_id"], strava["inserted"], strava["extracted"], strava["runs_last_24h"],
            strava["quarantined_now"]) == ("c/strava_activity", 3, 5, 2, 1)
    assert strava["last_finished_at"] == now - dt.timedelta(hours=1)
    assert (health["fitbit_weight"]["runs_last_24h"], health["fitbit_weight"]["quarantined_now"]) == (0, 0)
    calories = health["fitbit_calories"]  # only in quarantine: never loaded
    assert (calories["last_batch_id"], calories["runs_last_24h"], calories["quarantined_now"]) == (None, 0, 2)


def test_rate_limit_health_shows_when_each_window_resets(schema: Any) -> None:
    seen = dt.datetime(2024, 6, 3, 10, 20, 5, tzinfo=UTC)
    insert(schema, api_rate_limit, [{"api": "strava", "bucket": "read", "window_usage": 40, "window_limit": 100,
                                     "daily_usage": 400, "daily_limit": 1000, "window_seconds": 900,
                                     "seen_at": seen}])
    [row] = rows_of(schema, "SELECT * FROM rate_limit_health")
    assert row["window_resets_at"] == dt.datetime(2024, 6, 3, 10, 30, tzinfo=UTC)
    assert row["daily_resets_at"] == dt.datetime(2024, 6, 4, tzinfo=UTC)
    assert (row["window_usage"], row["daily_limit"]) == (40, 1000)


def test_a_strava_extract_records_the_rate_limit_usage(schema: Any, strava_connection: Any) -> None:
    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.windows import Window

    hour = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    before = dt.datetime.now(UTC)
    assert extract("strava_activity", "usage", Window(hour - dt.timedelta(days=30), hour)).extracted > 0
    rows = {r["bucket"]: r for r in rows_of(schema, "SELECT * FROM rate_limit_health")}
    assert set(rows) == {"read", "overall"}
    for row in rows.values():
        assert row["api"] == "strava" and row["window_seconds"] == 900
        assert row["window_usage"] > 0 and row["window_limit"] > 0 and row["daily_limit"] > 0
        assert before <= row["seen_at"] <= dt.datetime.now(UTC)
    first = rows["read"]["daily_usage"]
    extract("strava_activity", "usage-2", Window(hour - dt.timedelta(days=30), hour))
    [(again,)] = query(schema, "SELECT daily_usage FROM api_rate_limit WHERE bucket = 'read'")
    assert again > first  # one row per bucket, the last usage seen


def test_failing_to_record_the_usage_does_not_fail_the_extract(schema: Any, strava_connection: Any,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from fitness_pipeline.tasks import extract as extract_module
    from fitness_pipeline.windows import Window

    with transaction(schema) as cur:
        cur.execute("DROP VIEW rate_limit_health")
        cur.execute("DROP TABLE api_rate_limit")
    hour = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    caplog.set_level(logging.WARNING)
    extracted = extract_module.extract("strava_activity", "no-table", Window(hour - dt.timedelta(days=30), hour))
    assert extracted.extracted > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and r.name == "fitness_pipeline.tasks.extract"]
    assert warnings == ["Could not record the strava rate-limit usage (UndefinedTable); the extract goes on"]


def test_the_demos_weekly_summary_reads_training_week(schema: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "fitness_demo", Path(__file__).resolve().parents[1] / "devtools" / "scripts" / "demo.py")
    assert spec and spec.loader
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    monday = dt.date.today() - dt.timedelta(days=dt.date.today().weekday() + 7)
    start = dt.datetime.combine(monday, dt.time(7))
    insert(schema, strava_activity, [activity(start, start.replace(tzinfo=UTC), km=10.04, moving=5400),
                                     activity(start + dt.timedelta(days=1), start.replace(tzinfo=UTC), km=2)])
    insert(schema, fitbit_weight, [weighin(monday, 80.04), weighin(monday + dt.timedelta(days=2), 81.0)])
    insert(schema, fitbit_calories, [meals(monday, 2000), meals(monday + dt.timedelta(days=3), 2501)])
    with schema.cursor() as cur:
        weeks = demo.weekly_summary(cur, since=monday - dt.timedelta(days=30), weeks=12)
    schema.rollback()
    assert [(w["week_start"], w["activities"], w["logged_days"]) for w in weeks] == [(monday, 2, 2)]
    demo.report("no-such-run")
    out = capsys.readouterr().out
    assert f"{monday:%Y-%m-%d}            2     12.0     2:20       80.5      2250" in out, out

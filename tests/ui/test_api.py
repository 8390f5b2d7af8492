"""The training page's routes on a real Airflow 3.3 API server (the plugin loaded from plugins/, logins
required) over the demo athlete: auth on every route, hostile parameters, the numbers against
hand-written SQL on the tables (not the views), no payloads or secrets; and, in-process, an empty
database and one without the schema."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import time
from contextlib import closing
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.helpers import query
from tests.ui.conftest import TrainingServer
from tests.ui.truth import WEEK_TRUTH_SQL

AIRFLOW_MAJOR = int(version("apache-airflow").split(".")[0])
pytestmark = pytest.mark.skipif(AIRFLOW_MAJOR < 3, reason="the training page is Airflow 3's")
slow = pytest.mark.slow

ROUTES = ["/training/", "/training/static/app.js", "/training/static/no-such-file.js", "/training/api/calendar",
          "/training/api/calendar?month=2026-13", "/training/api/trends", "/training/api/sync",
          "/training/api/calendar/", "/training/no-such-route", "/training/api/nope"]  # nothing answers first
DATA_ROUTES = ["/training/api/calendar", "/training/api/trends", "/training/api/sync"]


@pytest.fixture(scope="module")
def token(training_server: TrainingServer) -> str:
    return training_server.login()


# --- the plugin -------------------------------------------------------------------------------------------

@slow
def test_airflow_lists_the_plugin_with_its_app_and_nav_entry(training_server: TrainingServer, token: str) -> None:
    listed = json.loads(training_server.cli("plugins", "-o", "json").stdout)
    (plugin,) = [p for p in listed if p["name"] == "fitness_training"]
    assert plugin["source"] == "$PLUGINS_FOLDER/training_plugin.py"
    assert plugin["fastapi_apps"] == [{"app": "fitness_pipeline.ui.plugin.TrainingApp", "url_prefix": "/training",
                                       "name": "Training"}]
    (view,) = plugin["external_views"]
    assert {k: view[k] for k in ("name", "href", "destination", "category", "url_route")} == {
        "name": "Training", "href": "training/", "destination": "nav", "category": "browse", "url_route": "training"}
    assert view["icon"].startswith("data:image/svg+xml,") and view["icon_dark_mode"].startswith("data:image/svg+xml,")

    # the API server validated and serves the same (one invalid key would have dropped the plugin from the UI)
    headers = {"Authorization": f"Bearer {token}"}
    import requests

    served = requests.get(f"{training_server.url}/api/v2/plugins", headers=headers, timeout=10).json()
    (plugin,) = [p for p in served["plugins"] if p["name"] == "fitness_training"]
    assert [v["url_route"] for v in plugin["external_views"]] == ["training"]
    errors = requests.get(f"{training_server.url}/api/v2/plugins/importErrors", headers=headers, timeout=10).json()
    assert errors["total_entries"] == 0, errors


# --- auth -------------------------------------------------------------------------------------------------

@slow
@pytest.mark.parametrize("route", ROUTES)
def test_every_route_needs_a_login(training_server: TrainingServer, route: str) -> None:
    response = training_server.get(route)
    assert response.status_code == 401, response.text[:300]
    assert response.json() == {"detail": "Not authenticated"}
    assert "Strava" not in response.text and "km" not in response.text


@slow
def test_other_paths_and_methods_answer_only_after_the_login(training_server: TrainingServer, token: str) -> None:
    import requests

    url = f"{training_server.url}/training/api/calendar"
    assert requests.post(url, timeout=10).status_code == 401
    assert requests.delete(url, timeout=10, headers={"Authorization": f"Bearer {token}"}).status_code == 405
    assert training_server.get("/training/no-such-route", token=token).status_code == 404
    assert training_server.get("/training/docs", token=token).status_code == 404
    assert training_server.get("/training/openapi.json", token=token).status_code == 404


@slow
@pytest.mark.parametrize("route", [*DATA_ROUTES[:1], "/training/"])
def test_a_forged_or_garbage_token_is_refused(training_server: TrainingServer, token: str, route: str) -> None:
    header, payload, _signature = token.split(".")
    for bad in ("garbage", f"{header}.{payload}.AAAA", ""):
        for response in (training_server.get(route, token=bad), training_server.get(route, cookie=bad)):
            assert response.status_code in (401, 403), (bad, response.status_code, response.text[:200])


@slow
def test_logged_in_with_a_bearer_token_or_the_cookie(training_server: TrainingServer, token: str) -> None:
    for credentials in ({"token": token}, {"cookie": token}, {"token": training_server.login("viewer")}):
        page = training_server.get("/training/", **credentials)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<html" in page.text.lower()
        for route in DATA_ROUTES:
            response = training_server.get(route, **credentials)
            assert response.status_code == 200, (route, response.text[:300])
            assert response.headers["content-type"] == "application/json"
            assert response.headers["cache-control"] == "no-store"


@slow
def test_static_files_have_their_media_types_and_stay_inside_static(training_server: TrainingServer,
                                                                     token: str) -> None:
    expected = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html",
                "chart.umd.min.js": "text/javascript"}
    for name, media_type in expected.items():
        response = training_server.get(f"/training/static/{name}", token=token)
        assert response.status_code == 200, name
        assert response.headers["content-type"].split(";")[0] == media_type
        assert response.headers["x-content-type-options"] == "nosniff"
    assert training_server.get("/training/static/nope.js", token=token).status_code == 404
    # traversal, sent byte for byte (a client library would normalise the dots away)
    netloc = urlsplit(training_server.url).netloc
    for path in ("/training/static/../app.py", "/training/static/..%2fapp.py", "/training/static/%2e%2e/app.py",
                 "/training/static/%2e%2e%2f%2e%2e%2fqueries.py", "/training/static//etc/passwd",
                 "/training/static/%2fetc%2fpasswd", "/training/static/..%5capp.py", "/training/static/%00"):
        conn = http.client.HTTPConnection(netloc, timeout=10)
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        conn.close()
        assert response.status == 404 or (response.status == 200 and "import " not in body
                                          and "root:" not in body), (path, response.status, body[:200])
        assert "def create_app" not in body and "root:x:" not in body


# --- parameters -------------------------------------------------------------------------------------------

HOSTILE = [
    ("/training/api/calendar", {"month": "2026-13"}),
    ("/training/api/calendar", {"month": "2026-00"}),
    ("/training/api/calendar", {"month": "26-01"}),
    ("/training/api/calendar", {"month": "2026-1"}),
    ("/training/api/calendar", {"month": "0000-01"}),
    ("/training/api/calendar", {"month": "9999-12"}),
    ("/training/api/calendar", {"month": "x" * 20_000}),
    ("/training/api/calendar", {"start": "'; drop table strava_activity; --"}),
    ("/training/api/calendar", {"start": "2026-02-30"}),
    ("/training/api/calendar", {"start": "2026-01-05", "weeks": "0"}),
    ("/training/api/calendar", {"start": "2026-01-05", "weeks": "61"}),
    ("/training/api/calendar", {"start": "2026-01-05", "weeks": "100000"}),
    ("/training/api/calendar", {"start": "2026-01-05", "weeks": "-1"}),
    ("/training/api/calendar", {"start": "2026-01-05", "weeks": "1e3"}),
    ("/training/api/calendar", {"weeks": "4"}),
    ("/training/api/calendar", {"month": "2026-01", "start": "2026-01-05"}),
    ("/training/api/calendar", {"today": "tomorrow"}),
    ("/training/api/trends", {"weeks": "0"}),
    ("/training/api/trends", {"weeks": "521"}),
    ("/training/api/trends", {"weeks": "100000"}),
    ("/training/api/trends", {"weeks": "9" * 5000}),
    ("/training/api/trends", {"weeks": "52; select pg_sleep(10)"}),
    ("/training/api/trends", {"today": "2026-01-01' OR '1'='1"}),
]


@slow
@pytest.mark.parametrize(("route", "params"), HOSTILE, ids=[f"{r.rsplit('/', 1)[1]}-{p}"[:60] for r, p in HOSTILE])
def test_bad_parameters_are_a_4xx_with_a_message(training_server: TrainingServer, token: str, route: str,
                                                  params: dict[str, str]) -> None:
    started = time.monotonic()
    response = training_server.get(route, token=token, **params)
    # the statement timeout is 2 s: a hostile parameter that reached a slow query would take at least that
    # (the margin is for a busy CI machine)
    assert time.monotonic() - started < 5
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code == 422:
        detail = response.json()["detail"]
        assert isinstance(detail, str) and len(detail) < 200
        assert any(word in detail for word in ("month", "start", "weeks", "today"))


@slow
def test_hostile_parameters_change_nothing(training_server: TrainingServer, token: str) -> None:
    training_server.get("/training/api/calendar", token=token, start="2026-01-05'; drop table strava_activity; --")
    with closing(training_server.connect()) as conn:
        assert query(conn, "SELECT count(*) > 0 FROM strava_activity") == [(True,)]


# --- the numbers ------------------------------------------------------------------------------------------



def two_weeks(conn: Any) -> list[tuple[Any, ...]]:
    """Two weeks of the demo athlete with activities, weigh-ins and nutrition logs, by hand-written SQL."""
    weeks = query(conn, WEEK_TRUTH_SQL)
    assert len(weeks) >= 6, "the demo athlete should have several complete weeks"
    return [weeks[-2], weeks[-6]]


def close(value: Any, expected: Any, places: float = 1e-6) -> bool:
    if expected is None or value is None:
        return value is expected
    return abs(float(value) - float(expected)) <= places * max(1.0, abs(float(expected)))


@slow
def test_calendar_weeks_equal_hand_written_sql_on_the_tables(training_server: TrainingServer, token: str) -> None:
    with closing(training_server.connect()) as conn:
        weeks = two_weeks(conn)
        for week, activities, km, moving, elevation, weight, kcal, logged in weeks:
            end = week + dt.timedelta(days=7)
            by_day = query(conn, "SELECT start_date_local::date, id FROM strava_activity WHERE deleted_at IS NULL "
                                 "AND start_date_local >= %s AND start_date_local < %s ORDER BY start_date_local, id",
                           (week, end))
            weights = dict(query(conn, "SELECT record_date, avg(weight) FROM fitbit_weight WHERE deleted_at IS NULL "
                                       "AND record_date >= %s AND record_date < %s GROUP BY 1", (week, end)))
            calories = dict(query(conn, "SELECT record_date, calories FROM fitbit_calories WHERE deleted_at IS NULL "
                                        "AND record_date >= %s AND record_date < %s", (week, end)))
            details = {activity_id: (burned, laps) for activity_id, burned, laps in query(
                conn, "SELECT activity_id, calories, lap_count FROM strava_activity_detail")}

            for params in ({"start": week.isoformat(), "weeks": "1"}, {"month": week.strftime("%Y-%m")}):
                response = training_server.get("/training/api/calendar", token=token, **params)
                assert response.status_code == 200, response.text[:300]
                body = response.json()
                assert body["empty"] is False
                (shown,) = [w for w in body["weeks"] if w["week_start"] == week.isoformat()]
                totals = shown["totals"]
                assert totals["activities"] == activities and totals["logged_days"] == logged
                assert close(totals["distance_km"], km) and totals["moving_time_s"] == moving
                assert close(totals["elevation_m"], elevation)
                assert close(totals["avg_weight_kg"], weight) and close(totals["avg_kcal"], kcal)

                assert [d["date"] for d in shown["days"]] == [(week + dt.timedelta(days=i)).isoformat()
                                                              for i in range(7)]
                assert [(dt.date.fromisoformat(d["date"]), a["id"]) for d in shown["days"]
                        for a in d["activities"]] == by_day
                for day in shown["days"]:
                    date = dt.date.fromisoformat(day["date"])
                    assert close(day["weight_kg"], weights.get(date)), day
                    assert close(day["kcal"], calories.get(date)), day  # no log: null, not 0
                    for activity in day["activities"]:
                        assert set(activity) == {"id", "sport_type", "name", "distance_km", "moving_time_s",
                                                 "elevation_m", "pace_s_per_km", "kcal_burned", "lap_count"}
                        # calories burned and laps where the activity's detail was read, else nothing
                        assert (activity["kcal_burned"], activity["lap_count"]) == details.get(
                            activity["id"], (None, None))


@slow
def test_calendar_month_covers_every_iso_week_touching_it(training_server: TrainingServer, token: str) -> None:
    body = training_server.get("/training/api/calendar", token=token, month="2026-03").json()
    # March 2026: Sunday 1st to Tuesday 31st -> the weeks of Monday 23 Feb .. Monday 30 Mar
    assert body["first_week"] == "2026-02-23"
    assert [w["week_start"] for w in body["weeks"]] == ["2026-02-23", "2026-03-02", "2026-03-09", "2026-03-16",
                                                        "2026-03-23", "2026-03-30"]
    default = training_server.get("/training/api/calendar", token=token).json()
    today = dt.date.fromisoformat(default["today"])
    assert any(d["date"] == today.isoformat() for w in default["weeks"] for d in w["days"])
    assert 4 <= len(default["weeks"]) <= 6


@slow
def test_trends_equal_hand_written_sql_on_the_tables(training_server: TrainingServer, token: str) -> None:
    body = training_server.get("/training/api/trends", token=token, weeks="26").json()
    today = dt.date.fromisoformat(body["ytd"]["as_of"])
    first_week = dt.date.fromisoformat(body["first_week"])
    assert first_week == today - dt.timedelta(days=today.weekday() + 7 * 25)
    with closing(training_server.connect()) as conn:
        by_sport = query(conn, "SELECT date_trunc('week', start_date_local)::date, "
                               "coalesce(sport_type, activity_type), count(*), sum(distance) / 1000, sum(moving_time) "
                               "FROM strava_activity "
                               "WHERE deleted_at IS NULL AND start_date_local >= %s GROUP BY 1, 2 ORDER BY 1, 2",
                         (first_week,))
        daily_weight = query(conn, "SELECT record_date, avg(weight) FROM fitbit_weight WHERE deleted_at IS NULL "
                                   "GROUP BY 1 ORDER BY 1")
        kcal = query(conn, "SELECT record_date, calories, avg(calories) OVER (PARTITION BY "
                           "date_trunc('week', record_date)) FROM fitbit_calories WHERE deleted_at IS NULL "
                           "AND record_date >= %s ORDER BY 1", (first_week,))
        ytd = query(conn, "SELECT count(*), coalesce(sum(distance), 0) / 1000, coalesce(sum(moving_time), 0) "
                          "FROM strava_activity WHERE deleted_at IS NULL "
                          "AND start_date_local >= date_trunc('year', %(d)s::date) "
                          "AND start_date_local < %(d)s::date + 1", {"d": today})
    assert by_sport, "the demo athlete should have activities in 26 weeks"
    shown = [(dt.date.fromisoformat(r["week_start"]), r["sport_type"], r["activities"], r["distance_km"],
              r["moving_time_s"]) for r in body["weekly_by_sport"]]
    assert [(*s[:3], s[4]) for s in shown] == [(*b[:3], b[4]) for b in by_sport]
    assert all(close(s[3], b[3]) for s, b in zip(shown, by_sport, strict=True))

    # weight: the day's mean, and the mean of the weigh-in days among the 7 days ending with it
    weights = dict(daily_weight)
    expected_weight = [(d, w, sum(v for day, v in daily_weight if d - dt.timedelta(days=6) <= day <= d)
                        / sum(1 for day, _ in daily_weight if d - dt.timedelta(days=6) <= day <= d))
                       for d, w in daily_weight if d >= first_week]
    assert expected_weight, "the demo athlete should have weigh-ins in 26 weeks"
    assert [r["date"] for r in body["weight"]] == [d.isoformat() for d, _, _ in expected_weight]
    for row, (day, weight, avg7) in zip(body["weight"], expected_weight, strict=True):
        assert close(row["weight_kg"], weights[day]) and close(row["weight_kg"], weight)
        assert close(row["avg7_kg"], avg7), (day, row)

    assert [(r["date"], r["kcal"]) for r in body["kcal"]] == [(d.isoformat(), float(k)) for d, k, _ in kcal]
    assert all(close(r["week_avg_kcal"], avg) for r, (_, _, avg) in zip(body["kcal"], kcal, strict=True))

    this_year = body["ytd"]["this_year"]
    assert this_year["activities"] == ytd[0][0] and this_year["moving_time_s"] == ytd[0][2]
    assert close(this_year["distance_km"], ytd[0][1])
    assert set(body["ytd"]["last_year"]) >= {"activities", "distance_km", "moving_time_s", "elevation_m"}


# --- sync health: no payloads, no secrets -----------------------------------------------------------------

MARKER = "PAYLOAD-MARKER-7f3a"


@slow
def test_sync_health_shows_what_runs_did_and_never_a_payload_or_token(training_server: TrainingServer,
                                                                        token: str) -> None:
    with closing(training_server.connect()) as conn:
        conn.execute("INSERT INTO quarantine (source, record_key, reason, payload) VALUES "
                     "('strava_activity', '424242', 'distance must be a number, got str', %s)",
                     (json.dumps({"id": 424242, "name": f"Secret run {MARKER}", "distance": "far",
                                  "weight": 81.2345, "map": {"summary_polyline": MARKER}}),))
        conn.commit()
        try:
            response = training_server.get("/training/api/sync", token=token)
            secrets_stored = query(conn, "SELECT refresh_token, access_token FROM oauth_token")
            runs = query(conn, "SELECT DISTINCT ON (source) source, extracted, inserted, updated, unchanged, deleted, "
                               "quarantined FROM sync_run ORDER BY source, finished_at DESC")
        finally:
            conn.execute("DELETE FROM quarantine WHERE record_key = '424242'")
            conn.commit()
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"athlete", "sources", "quarantine", "tokens", "rate_limits"}
    assert body["athlete"] == {"id": 1, "name": "default", "active": True, "inactive_reason": None}
    assert MARKER not in response.text and "81.2345" not in response.text and "payload" not in response.text
    (held,) = [q for q in body["quarantine"] if q["record_key"] == "424242"]
    assert set(held) == {"source", "record_key", "reason", "first_seen", "last_seen", "times_seen"}
    assert held["reason"] == "distance must be a number, got str"

    assert secrets_stored, "the demo run should have stored its OAuth tokens"
    for refresh_token, access_token in secrets_stored:
        assert refresh_token not in response.text and (not access_token or access_token not in response.text)
    assert {t["conn_type"] for t in body["tokens"]} == {"strava", "fitbit"}
    assert all(set(t) == {"token_key", "conn_type", "conn_id", "refreshed_at", "expires_at", "athlete_id"}
               for t in body["tokens"])

    sources = {s["source"]: s for s in body["sources"]}
    for source, *counts in runs:
        shown = sources[source]
        assert [shown[k] for k in ("extracted", "inserted", "updated", "unchanged", "deleted", "quarantined")] == counts
        assert shown["last_finished_at"] and dt.datetime.fromisoformat(shown["last_finished_at"]).tzinfo
    assert {"strava_activity", "fitbit_weight", "fitbit_calories"} <= set(sources)
    for limit in body["rate_limits"]:
        assert {"api", "bucket", "window_usage", "window_limit", "daily_usage", "daily_limit", "seen_at"} <= set(limit)


# --- database states (in-process app, login dependency overridden) ----------------------------------------

def test_empty_database_is_an_empty_state_not_an_error(training_app: Any, schema: Any) -> None:
    calendar = training_app.get("/api/calendar", params={"month": "2026-02"})
    assert calendar.status_code == 200
    body = calendar.json()
    assert body["empty"] is True and body["first_week"] == "2026-01-26" and len(body["weeks"]) == 5
    assert all(not d["activities"] and d["weight_kg"] is None and d["kcal"] is None
               for w in body["weeks"] for d in w["days"])
    assert body["weeks"][0]["totals"] == {"activities": 0, "distance_km": 0.0, "moving_time_s": 0, "elevation_m": 0.0,
                                          "avg_weight_kg": None, "avg_kcal": None, "logged_days": 0}
    trends = training_app.get("/api/trends").json()
    assert (trends["weekly_by_sport"], trends["weight"], trends["kcal"]) == ([], [], [])
    assert trends["ytd"]["this_year"] == {"activities": 0, "distance_km": 0.0, "moving_time_s": 0, "elevation_m": 0.0}
    assert training_app.get("/api/sync").json() == {
        "athlete": {"id": 1, "name": "default", "active": True, "inactive_reason": None},
        "sources": [], "quarantine": [], "tokens": [], "rate_limits": []}


def test_a_month_without_data_in_a_database_with_data_is_not_empty(training_app: Any, schema: Any) -> None:
    schema.cursor().execute("INSERT INTO fitbit_calories (record_date, id, calories, raw) "
                            "VALUES ('2025-06-01', 1748736000, 2100, '{}')")
    schema.commit()
    body = training_app.get("/api/calendar", params={"month": "2026-02"}).json()
    assert body["empty"] is False
    june = training_app.get("/api/calendar", params={"month": "2025-06"}).json()
    (day,) = [d for w in june["weeks"] for d in w["days"] if d["date"] == "2025-06-01"]
    assert day == {"date": "2025-06-01", "activities": [], "weight_kg": None, "kcal": 2100.0}


@pytest.mark.parametrize("route", ["/api/calendar", "/api/trends", "/api/sync"])
def test_before_the_first_run_the_routes_explain_instead_of_failing(training_app: Any, route: str) -> None:
    response = training_app.get(route)  # fitness_db exists, ensure_schema never ran
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "no_schema" and "fitness_sync" in body["detail"]
    assert "Traceback" not in response.text and "relation" not in response.text


def test_a_missing_connection_is_explained(training_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_FITNESS_DB")
    response = training_app.get("/api/sync")
    assert response.status_code == 503 and response.json()["code"] == "no_connection"


def test_each_request_is_read_only_under_a_statement_timeout(fitness_db: str) -> None:
    from fitness_pipeline.ui import queries

    with queries.read_only() as cursor:
        cursor.execute("SHOW transaction_read_only")
        assert cursor.fetchone()[0] == "on"
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "2s"
        with pytest.raises(Exception, match="read-only"):
            cursor.execute("CREATE TABLE x (a int)")
    with queries.read_only() as cursor:  # a slow query is cancelled by the database
        started = time.monotonic()
        with pytest.raises(Exception, match="statement timeout"):
            cursor.execute("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 3


def test_a_timed_out_query_is_a_503(training_app: Any, schema: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fitness_pipeline.ui import queries

    monkeypatch.setattr(queries, "STATEMENT_TIMEOUT", "1ms")
    monkeypatch.setattr(queries, "sync", lambda cursor, athlete_id: cursor.execute("SELECT pg_sleep(1)"))
    response = training_app.get("/api/sync")
    assert response.status_code == 503 and response.json()["code"] == "timeout"


# --- parameters, unit -------------------------------------------------------------------------------------

def test_month_weeks_cover_the_month() -> None:
    from fitness_pipeline.ui.queries import month_weeks, parse_month

    assert month_weeks(parse_month("2026-02")) == (dt.date(2026, 1, 26), 5)  # Sun 1 Feb .. Sat 28 Feb
    assert month_weeks(parse_month("2021-02")) == (dt.date(2021, 2, 1), 4)  # Mon 1 .. Sun 28: four weeks
    assert month_weeks(parse_month("2026-03")) == (dt.date(2026, 2, 23), 6)
    assert month_weeks(parse_month("2100-12")) == (dt.date(2100, 11, 29), 5)


def test_same_day_last_year() -> None:
    from fitness_pipeline.ui.queries import same_day_last_year

    assert same_day_last_year(dt.date(2028, 2, 29)) == dt.date(2027, 2, 28)
    assert same_day_last_year(dt.date(2026, 12, 2)) == dt.date(2025, 12, 2)


# --- several athletes: each user sees only the athletes mapped to them ----------------------------------------


def test_each_user_sees_only_the_athletes_mapped_to_them(training_app: Any, schema: Any) -> None:
    from fitness_pipeline.db import transaction

    with transaction(schema) as cur:
        cur.execute("INSERT INTO athlete (name, airflow_users) VALUES ('alice', ARRAY['alice', 'coach']) RETURNING id")
        (alice,) = cur.fetchone()
        cur.execute("UPDATE athlete SET airflow_users = ARRAY['admin', 'coach'] WHERE id = 1")
        for athlete, activity, km in ((1, 91, 10000.0), (alice, 92, 21100.0)):
            cur.execute("INSERT INTO strava_activity (id, athlete_id, name, sport_type, distance, moving_time, "
                        "start_date, start_date_local, raw) VALUES (%s, %s, 'run', 'Run', %s, 3600, "
                        "'2026-03-02 06:00+00', '2026-03-02 07:00', '{}')", (activity, athlete, km))
        cur.execute("UPDATE athlete SET active = false, inactive_reason = 'revoked: authorize again' WHERE id = %s",
                    (alice,))
    app = training_app.app

    def as_user(name: str) -> None:
        app.dependency_overrides[app.state.user_name] = lambda: name

    def activity_ids(params: str = "") -> list[int]:
        response = training_app.get(f"/api/calendar?month=2026-03{params}")
        assert response.status_code == 200, response.text
        return [a["id"] for w in response.json()["weeks"] for d in w["days"] for a in d["activities"]]

    as_user("coach")  # mapped to both: a picker, the first by default, either on request
    assert [a["name"] for a in training_app.get("/api/athletes").json()["athletes"]] == ["default", "alice"]
    assert activity_ids() == [91] and activity_ids(f"&athlete={alice}") == [92]
    sync = training_app.get(f"/api/sync?athlete={alice}").json()
    assert sync["athlete"]["active"] is False and "authorize again" in sync["athlete"]["inactive_reason"]
    as_user("alice")  # her own only; the default athlete is as unknown to her as one that does not exist
    assert [a["name"] for a in training_app.get("/api/athletes").json()["athletes"]] == ["alice"]
    assert activity_ids() == [92]
    for path in ("/api/calendar?month=2026-03&athlete=1", "/api/trends?athlete=1", "/api/sync?athlete=1",
                 "/api/sync?athlete=999"):
        response = training_app.get(path)
        assert response.status_code == 404 and response.json()["code"] == "no_such_athlete", path
        assert "default" not in response.text and "10000" not in response.text
    as_user("mallory")  # mapped to nobody: told who can map them, sees nothing
    assert training_app.get("/api/athletes").json() == {"athletes": []}
    response = training_app.get("/api/calendar?month=2026-03")
    assert response.status_code == 403 and "fitness_pipeline.athletes users" in response.json()["detail"]


def test_an_activity_shows_its_detail_and_laps_to_its_athlete_only(training_app: Any, schema: Any) -> None:
    from fitness_pipeline.db import transaction
    from fitness_pipeline.tasks.details import store_detail
    from tests.test_details import STRAVA_EXAMPLE

    with transaction(schema) as cur:
        cur.execute("INSERT INTO athlete (name, airflow_users) VALUES ('alice', ARRAY['alice']) RETURNING id")
        (alice,) = cur.fetchone()
        cur.execute("UPDATE athlete SET airflow_users = ARRAY['admin'] WHERE id = 1")
        for athlete, activity in ((1, 91), (alice, 92)):
            cur.execute("INSERT INTO strava_activity (id, athlete_id, name, sport_type, distance, moving_time, "
                        "start_date, start_date_local, raw) VALUES (%s, %s, 'Ride', 'Ride', 28099, 4207, "
                        "'2026-03-02 06:00+00', '2026-03-02 07:00', '{}')", (activity, athlete))
        assert store_detail(cur, {**STRAVA_EXAMPLE, "id": 91, "description": "Hills"}, 1)
    app = training_app.app
    app.dependency_overrides[app.state.user_name] = lambda: "admin"

    shown = training_app.get("/api/activity?id=91")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert (body["kcal_burned"], body["description"], body["device_name"], body["gear_name"]) == (
        870.2, "Hills", "Strava iPhone App", "Tarmac")
    assert [(lap["lap_index"], lap["distance"], lap["average_watts"]) for lap in body["laps"]] == [(1, 8046.72, 237.6)]
    days = training_app.get("/api/calendar?month=2026-03").json()["weeks"]
    (chip,) = [a for w in days for d in w["days"] for a in d["activities"]]
    assert (chip["id"], chip["kcal_burned"], chip["lap_count"]) == (91, 870.2, 1)

    # alice's activity is as unknown to the admin as one that does not exist; no detail yet: nulls, no laps
    for missing in ("92", "93"):
        response = training_app.get(f"/api/activity?id={missing}")
        assert response.status_code == 404 and response.json()["code"] == "no_such_activity"
    app.dependency_overrides[app.state.user_name] = lambda: "alice"
    plain = training_app.get("/api/activity?id=92").json()
    assert plain["kcal_burned"] is None and plain["laps"] == [] and plain["gear_name"] is None
    for bad in ("", "x", "-1", "1e3", "9" * 30):
        response = training_app.get(f"/api/activity?id={bad}")
        assert response.status_code == 422 and "activity id" in response.json()["detail"], bad

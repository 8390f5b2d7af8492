"""Server time of the training page's data routes, for 10 years of one athlete and for 100,000 activities.

What it measures: the page's FastAPI app (``fitness_pipeline.ui.app.create_app``) **in-process**, through
Starlette's ``TestClient``, with Airflow's login dependency overridden (``app.dependency_overrides``: no
JWT check and the metadata-database lookup of the DAG's team, not measured here: ``tests/ui`` runs
the real one). Each timed
request is the whole server side: routing, parameter validation, ``fitness_db.connect()`` (a new
``PostgresHook`` connection per request, as the server does), the read-only transaction with its
statement timeout, the queries over the views and the JSON response. No network, no browser.

Datasets (synthetic, deterministic; loaded with ``fitness_pipeline.loader.upsert_rows`` into a database
made by ``ensure_schema``, then ``VACUUM ANALYZE``):

* ``10 years``: one athlete, 5,000 activities (11 sport types, local dates over the 10 years ending
  today), 3,650 weigh-ins (one a day), 3,650 days of calories, plus 10 years of hourly ``sync_run`` rows
  for the 3 sources (262,800), 40 quarantined records, 2 OAuth tokens and 2 rate-limit buckets;
* ``100000 activities``: the same with 100,000 activities over the same 10 years.

Routes: ``calendar`` (``/api/calendar?month=``, last month: a full month of data), ``calendar 60 weeks``
(``?start=&weeks=60``, the largest calendar), ``trends`` (``/api/trends``, 52 weeks), ``trends 520 weeks``
(the largest), ``sync`` (``/api/sync``), and ``page`` (the three calls a page load makes: calendar +
trends + sync, one after the other). ``--repeat`` timed requests each (default 60) after 3 untimed
ones; median and p95 in ms.

Also the size of the page's shipped assets (every file in ``plugins/fitness_pipeline/ui/static``).

Last line: ``dashboard: p95 <ms> ms at 10 years, <ms> ms at 100000 activities, assets <KB> KB``, the p95
being the slowest data route's (calendar, trends, sync; the 60- and 520-week variants are printed
but not in it). Targets: p95 < 100 ms per route at 10 years, < 500 ms at 100,000 activities, assets < 1 MB.
Nothing is asserted.

Run: ``cd /work/main && PYTHONPATH=plugins:devtools .venv/bin/python bench/dashboard.py [--repeat N]``
(or ``make bench``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "devtools")]

from fitness_devtools.embedded_stack import airflow_env, start_postgres  # noqa: E402

YEARS = 10
SPORTS = [("Run", 0.35, 10.0), ("Ride", 0.2, 40.0), ("Walk", 0.12, 5.0), ("TrailRun", 0.06, 15.0),
          ("Swim", 0.06, 2.0), ("Hike", 0.05, 12.0), ("WeightTraining", 0.06, 0.0), ("VirtualRide", 0.04, 30.0),
          ("Yoga", 0.03, 0.0), ("NordicSki", 0.02, 20.0), ("Rowing", 0.01, 8.0)]
SOURCES = ("strava_activity", "fitbit_weight", "fitbit_calories")
STATIC = REPO / "plugins" / "fitness_pipeline" / "ui" / "static"


# --- synthetic data ---------------------------------------------------------------------------------------

def _blank(table: Any) -> dict[str, Any]:
    from fitness_pipeline.schema import data_columns

    return {c.name: None for c in data_columns(table)}


def activity_rows(count: int, today: dt.date, seed: int = 7) -> list[dict[str, Any]]:
    from fitness_pipeline.schema import strava_activity

    rng = random.Random(seed)
    first = today - dt.timedelta(days=365 * YEARS)
    span = (today - first).days * 86400
    names, weights = [s[0] for s in SPORTS], [s[1] for s in SPORTS]
    rows = []
    for index in range(count):
        local = dt.datetime.combine(first, dt.time(5)) + dt.timedelta(seconds=rng.randrange(span))
        offset = rng.choice((-8, -5, 0, 1, 9)) * 3600
        sport = rng.choices(names, weights)[0]
        km = max(0.0, rng.gauss(dict((s[0], s[2]) for s in SPORTS)[sport], 3.0)) if sport not in (
            "WeightTraining", "Yoga") else 0.0
        moving = int(600 + km * rng.uniform(200, 420)) if km else rng.randrange(1800, 5400)
        row = _blank(strava_activity)
        row.update(id=10_000_000_000 + index, owner=1234, activity_type=sport, sport_type=sport,
                   name=f"{sport} {index}", distance=km * 1000, moving_time=moving,
                   elapsed_time=moving + rng.randrange(0, 900), total_elevation_gain=round(rng.uniform(0, 600), 1),
                   average_speed=(km * 1000 / moving) if moving else None, average_heartrate=rng.uniform(110, 170),
                   start_date=(local - dt.timedelta(seconds=offset)).replace(tzinfo=dt.UTC), start_date_local=local,
                   timezone="(GMT+00:00) UTC", utc_offset=float(offset), manual=False, private=False,
                   raw=json.dumps({"id": 10_000_000_000 + index, "type": sport}))
        rows.append(row)
    return rows


def weight_rows(today: dt.date) -> list[dict[str, Any]]:
    from fitness_pipeline.schema import fitbit_weight

    rows = []
    for day in range(365 * YEARS):
        date = today - dt.timedelta(days=day)
        row = _blank(fitbit_weight)
        row.update(id=5_000_000 + day, weight=80 + 3 * ((day % 97) / 97) - day / 1000, bmi=24.5, fat=None,
                   record_date=date, record_time=dt.time(7, 15),
                   measured_at=dt.datetime.combine(date, dt.time(6, 15), dt.UTC), utc_offset=3600,
                   platform="FITBIT", recording_method="MANUAL",
                   data_point_name=f"users/me/dataTypes/weight/dataPoints/{5_000_000 + day}", raw="{}")
        rows.append(row)
    return rows


def calorie_rows(today: dt.date) -> list[dict[str, Any]]:
    from fitness_pipeline.schema import fitbit_calories

    rows = []
    for day in range(365 * YEARS):
        date = today - dt.timedelta(days=day)
        row = _blank(fitbit_calories)
        row.update(record_date=date, id=int(dt.datetime.combine(date, dt.time(), dt.UTC).timestamp()),
                   calories=1800 + (day * 37) % 900, raw="{}")
        rows.append(row)
    return rows


HEALTH_SQL = """
INSERT INTO sync_run (batch_id, source, window_start, window_end, extracted, quarantined, inserted, updated,
                      unchanged, deleted, finished_at)
SELECT 'scheduled__' || to_char(h, 'YYYY-MM-DD"T"HH24') || '/' || s, s, h - interval '73 hours', h, 12, 0, 1, 0, 11,
       0, h + interval '2 minutes'
FROM generate_series(now() - interval '{years} years', now(), interval '1 hour') AS h,
     unnest(ARRAY['strava_activity', 'fitbit_weight', 'fitbit_calories']) AS s;
INSERT INTO quarantine (source, record_key, reason, payload, first_seen, last_seen, times_seen)
SELECT 'strava_activity', (900000 + i)::text, 'distance must be a number, got str', '{{"distance": "far"}}',
       now() - i * interval '1 day', now() - i * interval '1 hour', i
FROM generate_series(1, 40) AS i;
INSERT INTO oauth_token (token_key, refresh_token, access_token, expires_at, seed_fingerprint)
VALUES ('strava:strava_default', 'r1', 'a1', now() + interval '6 hours', 'f1'),
       ('fitbit:fitbit_default', 'r2', 'a2', now() + interval '1 hour', 'f2');
INSERT INTO api_rate_limit (api, bucket, window_usage, window_limit, daily_usage, daily_limit, window_seconds, seen_at)
VALUES ('strava', 'read', 12, 100, 140, 1000, 900, now()), ('strava', 'overall', 12, 200, 140, 2000, 900, now());
"""


def load(dsn_env: str, activities: int, today: dt.date) -> dict[str, int]:
    """A fresh schema with the synthetic athlete in the database of connection ``fitness_db``."""
    from fitness_pipeline import schema
    from fitness_pipeline.db import connect, transaction
    from fitness_pipeline.ddl import ensure_schema
    from fitness_pipeline.loader import upsert_rows

    counts = {}
    with closing(connect()) as conn:
        ensure_schema(conn)
        for table, rows in ((schema.strava_activity, activity_rows(activities, today)),
                            (schema.fitbit_weight, weight_rows(today)), (schema.fitbit_calories, calorie_rows(today))):
            for start in range(0, len(rows), 20_000):
                with transaction(conn) as cur:
                    upsert_rows(cur, table, rows[start:start + 20_000])
            counts[table.name] = len(rows)
        with transaction(conn) as cur:
            cur.execute(HEALTH_SQL.format(years=YEARS))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
            cur.execute("SELECT count(*) FROM sync_run")
            counts["sync_run"] = cur.fetchone()[0]
    return counts


# --- timing -----------------------------------------------------------------------------------------------

def timed(call: Callable[[], Any], repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def p95(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(client: Any, repeat: int, today: dt.date) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Times (ms) of each route and of a page load's three calls; and each route's response size (bytes)."""
    def get(path: str, **params: str) -> Callable[[], Any]:
        def call() -> Any:
            response = client.get(path, params=params)
            if response.status_code != 200:
                raise RuntimeError(f"{path} {params}: {response.status_code} {response.text[:300]}")
            return response

        return call

    last_month = (today.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")  # a full month of data
    routes = {
        "calendar": get("/api/calendar", month=last_month),
        "calendar 60 weeks": get("/api/calendar", start=(today - dt.timedelta(weeks=59)).isoformat(), weeks="60"),
        "trends": get("/api/trends"),
        "trends 520 weeks": get("/api/trends", weeks="520"),
        "sync": get("/api/sync"),
    }
    results = {name: timed(call, repeat) for name, call in routes.items()}
    page = [routes["calendar"], routes["trends"], routes["sync"]]
    results["page (calendar + trends + sync)"] = timed(lambda: [call() for call in page], repeat)
    return results, {name: len(call().content) for name, call in routes.items()}


def assets_kb() -> tuple[float, list[tuple[str, int]]]:
    files = sorted((p.relative_to(STATIC).as_posix(), p.stat().st_size) for p in STATIC.rglob("*") if p.is_file())
    return sum(size for _, size in files) / 1024, files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=60)
    parser.add_argument("--activities", type=int, default=100_000, help="activities of the large dataset")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    os.environ.update(airflow_env(work / "airflow"))
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    postgres = start_postgres(work / "pgdata", keep=False)
    try:
        from fastapi.testclient import TestClient

        from fitness_pipeline.ui.app import create_app

        app = create_app()
        app.dependency_overrides[app.state.requires_login] = lambda: None  # no JWT: see the docstring
        app.dependency_overrides[app.state.user_name] = lambda: "admin"
        client = TestClient(app)
        today = dt.date.today()
        print("training page data routes, in-process (TestClient, login dependency overridden), "
              f"{args.repeat} timed requests each; ms")
        worst: dict[str, float] = {}
        for label, activities in (("10 years", 5_000), (f"{args.activities} activities", args.activities)):
            database = "bench_" + label.split()[0]
            postgres.create_database(database)
            os.environ["AIRFLOW_CONN_FITNESS_DB"] = postgres.connection_env(database)
            started = time.monotonic()
            counts = load(os.environ["AIRFLOW_CONN_FITNESS_DB"], activities, today)
            print(f"\n{label}: {', '.join(f'{v:,} {k}' for k, v in counts.items())} "
                  f"(loaded in {time.monotonic() - started:.1f} s)")
            results, sizes = measure(client, args.repeat, today)
            print(f"  {'route':<34}{'median':>9}{'p95':>9}{'max':>9}")
            for name, times in results.items():
                print(f"  {name:<34}{statistics.median(times):>9.1f}{p95(times):>9.1f}{max(times):>9.1f}")
            worst[label] = max(p95(results[name]) for name in ("calendar", "trends", "sync"))
            print("  response bytes: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
        total, files = assets_kb()
        print(f"\nassets (plugins/fitness_pipeline/ui/static): {total:.1f} KB in {len(files)} files: "
              + ", ".join(f"{name} {size / 1024:.1f} KB" for name, size in files))
        ten, large = worst.values()
        print(f"dashboard: p95 {ten:.0f} ms at 10 years, {large:.0f} ms at {args.activities} activities, "
              f"assets {total:.0f} KB")
    finally:
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

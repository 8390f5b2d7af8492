"""`make demo`: run fitness_sync once on the embedded defaults and say what it did.

Starts PostgreSQL (pgserver, data under .local/pgdata) and the API emulator on loopback,
points the Airflow connections at them, runs the DAG for the last full hour with a
lookback of LOOKBACK_DAYS (so the demo athlete's last months arrive), and prints rows
inserted / updated / unchanged per table and a weekly summary. Run it again: it is
fast and leaves the same data.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import secrets
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "devtools")]

from fitness_devtools.embedded_stack import airflow_env, emulator_connection_env, prepare_airflow_db, start_postgres  # noqa: E402

#: the demo's state (PostgreSQL data, Airflow's SQLite, the lock); FITNESS_DEMO_DIR moves it (tests)
LOCAL = Path(os.environ.get("FITNESS_DEMO_DIR") or REPO / ".local")
DATABASE = "fitness"
LOOKBACK_DAYS = 120



@contextmanager
def demo_lock(local: Path) -> Iterator[None]:
    """One demo at a time per state dir: a second one waits for the first (two at once share one PostgreSQL data
    directory and one Airflow SQLite database, and crash each other with Airflow-internal errors)."""
    local.mkdir(parents=True, exist_ok=True)
    with open(local / "demo.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            print(f"another make demo is running (pid {holder}); waiting...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel when the other one ends, however it ends
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def main() -> int:
    with demo_lock(LOCAL):
        return demo()


def demo() -> int:
    started = time.monotonic()
    os.environ.update(airflow_env(LOCAL / "airflow"))
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the summary below says what happened
    postgres = start_postgres(LOCAL / "pgdata", keep=True)
    if not postgres.database_exists(DATABASE):
        postgres.create_database(DATABASE)
    os.environ["AIRFLOW_CONN_FITNESS_DB"] = postgres.connection_env(DATABASE)

    from fitness_emulator import EmulatorSettings, GoogleSettings, StravaSettings, start_emulator

    # A new emulator never issued earlier demos' tokens: a fresh refresh token in the
    # Connection makes the token store start over, exactly as after a user re-authorizes.
    settings = EmulatorSettings(strava=StravaSettings(initial_refresh_token=secrets.token_hex(16)),
                                google=GoogleSettings(initial_refresh_token=secrets.token_hex(16)))
    with start_emulator(settings) as emulator:
        os.environ["AIRFLOW_CONN_STRAVA_DEFAULT"] = emulator_connection_env(emulator.url)
        os.environ["AIRFLOW_CONN_FITBIT_DEFAULT"] = emulator_connection_env(emulator.url, "fitbit")
        print(f"PostgreSQL: {postgres.socket_dir} (database {DATABASE!r}); API emulator: {emulator.url}")
        prepare_airflow_db()
        logging.getLogger("airflow").setLevel(logging.WARNING)
        # dag.test() talks to Airflow's execution API through Starlette's test client, which warns about httpx
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        run_id = run_dag()
        report(run_id)
        print(f"API requests served: {emulator.stats()['requests']}")
    print(f"Done in {time.monotonic() - started:.1f} s. Data stays in {LOCAL}; `make clean` removes it.")
    return 0


def run_dag(lookback_hours: int = LOOKBACK_DAYS * 24) -> str:
    """One run of fitness_sync for the hour that just ended; returns its run id."""
    from airflow.models import DagBag

    from fitness_devtools.dag_runs import dag_test

    dag = DagBag(dag_folder=str(REPO / "dags" / "fitness_sync.py")).get_dag("fitness_sync")
    # a manual run at the top of this hour syncs the hour that just ended (plus the lookback); dag_test,
    # not dag.test(): the run is recorded as started now, not at its logical date (the top of the hour)
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    dag_run = dag_test(dag, logical_date=hour, run_conf={"lookback_hours": lookback_hours})
    print(f"\nRun {dag_run.run_id}: {dag_run.state}")
    if str(dag_run.state) not in ("success", "DagRunState.SUCCESS"):
        raise SystemExit(f"fitness_sync did not succeed ({dag_run.state}); see the log above.")
    return dag_run.run_id


def report(run_id: str) -> None:
    from fitness_pipeline.db import connect

    with closing(connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT source, extracted, quarantined, inserted, updated, unchanged FROM sync_run "
                    "WHERE batch_id LIKE %(run)s ORDER BY source", {"run": f"{run_id}/%"})
        print(f"\n{'table':<18}{'fetched':>9}{'inserted':>10}{'updated':>9}{'unchanged':>11}{'quarantined':>13}")
        for source, extracted, quarantined, inserted, updated, unchanged in cur.fetchall():
            print(f"{source:<18}{extracted:>9}{inserted:>10}{updated:>9}{unchanged:>11}{quarantined:>13}")
        cur.execute("SELECT count(*), count(d.activity_id), coalesce(sum(d.lap_count), 0) FROM strava_activity a "
                    "LEFT JOIN strava_activity_detail d ON d.activity_id = a.id WHERE a.deleted_at IS NULL")
        activities, detailed, laps = cur.fetchone()
        print(f"\nActivity details (laps, gear, calories): {detailed} of {activities} activities read, {laps} laps; "
              "the next runs read the rest, oldest first, within detail_budget_share of Strava's limits")
        print(f"\n{'week of':<12}{'activities':>11}{'km':>9}{'moving':>9}{'weight kg':>11}{'kcal/day':>10}")
        for week in weekly_summary(cur, since=dt.date.today() - dt.timedelta(days=LOOKBACK_DAYS), weeks=12):
            moving = week["moving_time_s"]
            print(f"{week['week_start']:%Y-%m-%d}  {week['activities']:>11}{week['distance_km']:>9.1f}"
                  f"{f'{moving // 3600}:{moving % 3600 // 60:02d}' if moving else '':>9}"
                  f"{_rounded(week['avg_weight_kg'], 1):>11}{_rounded(week['avg_kcal'], 0):>10}")


def weekly_summary(cur: Any, since: dt.date, weeks: int) -> list[dict[str, Any]]:
    """The last ``weeks`` ISO weeks from ``since`` on, newest first, as the view ``training_week`` has them (the
    calendar page and BI tools read the same view)."""
    import sqlalchemy as sa

    from fitness_pipeline.db import execute
    from fitness_pipeline.views import training_week

    week = training_week.table
    execute(cur, sa.select(week).where(week.c.week_start >= since).order_by(week.c.week_start.desc()).limit(weeks))
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _rounded(value: float | None, digits: int) -> str:
    """A mean for the summary: blank without one (no weigh-in, no nutrition log that week), never 0."""
    return "" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())

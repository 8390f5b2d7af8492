"""`make soak`: many simulated hourly runs of fitness_sync with random faults; nothing may be lost.

A seeded random sequence of ``--hours`` hourly runs (real ``dag.test()`` runs of the DAG, retries off so a
fault shows as a failed try) against the API emulator and an embedded PostgreSQL that can be crashed.
Time is simulated: the soak starts ``--hours`` hours ago; before each run the emulator's clock and the
token store's clock move to two minutes after that run's hour, so activities and weigh-ins appear as
the hours pass and tokens expire. Between runs the athlete uploads, edits and deletes activities and
weighs in (and the API deletes a weigh-in now and then). About one run in five (``--fault-rate``) gets a
fault from the matrix (tests/test_fault_matrix.py): 5xx bursts shorter and longer than the retries, a
truncated body, an answer slower than the read timeout, the token endpoint failing, PostgreSQL killed
(SIGKILL or ``pg_ctl -m immediate``) while a load waits inside it.

Then one clean hourly run, and the check: a reference database loaded by one fault-free history import
of the same emulator must hold the same live rows (load timestamps aside) over the hours the soak
covered. lost = rows the reference has and the soak lacks (or marked deleted), duplicated = live rows
the soak has and the reference does not, stale = rows in both that differ. Last line::

    soak: <hours> hours, <faults> faults injected (<kinds> kinds), <failed tries> failed tries, <lost> lost,
    <duplicated> duplicated, <stale> stale, tables equal: yes|no

Exit code 0 only when lost, duplicated and stale are 0 and the tables are equal.

    PYTHONPATH=plugins:devtools .venv/bin/python devtools/scripts/soak.py [--seed 7] [--hours 300]
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import logging
import os
import random
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "devtools")]

from fitness_devtools.embedded_stack import airflow_env, emulator_connection_env, prepare_airflow_db  # noqa: E402

HOUR = dt.timedelta(hours=1)
TOKEN_STORE = "fitness_tokens"
API_FAULTS: dict[str, dict[str, Any]] = {
    "5xx burst shorter than the retries": {"fail_next": 2, "fail_status": 503},
    "5xx burst longer than the retries": {"fail_next": 60, "fail_status": 502},
    "truncated JSON body": {"malformed_next": 1},
    "answer slower than the read timeout": {"slow_next": 1, "slow_seconds": 2.5},
    "token endpoint 5xx": {"token_fail_next": 40, "token_fail_status": 503},
    # real changes between two pages of a listing (the daily full reconciliation spans pages), whichever
    # listing (Strava or Google) comes first
    "a record deleted during a listing": {"listing_delete_next": 1},
    "a record added during a listing": {"listing_insert_next": 1},
    "an empty page followed by more data": {"empty_page_next": 1},
}
CRASH_KINDS: dict[str, Any] = {
    "PostgreSQL SIGKILLed inside a load": "sigkill",
    "PostgreSQL stopped -m immediate inside a load": "immediate",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hours", type=int, default=300)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    work = Path(tempfile.mkdtemp(prefix="fitness-soak-"))
    os.environ.update(airflow_env(work / "airflow"))
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
    logging.disable(logging.WARNING)  # the summary is the output; failed tries are counted, not printed
    prepare_airflow_db()

    import requests

    from fitness_devtools.killable_postgres import KillablePostgres, crash_when_blocked
    from fitness_emulator import EmulatorSettings, GoogleSettings, StravaSettings, start_emulator
    from fitness_pipeline import tokens
    from fitness_pipeline.db import connect
    from fitness_pipeline.ddl import ensure_schema
    from fitness_pipeline.hooks import strava as strava_hook

    server = KillablePostgres(work / "pgdata")
    for name in ("soak", "reference", "tokens"):
        server.embedded.create_database(name)
    os.environ[f"AIRFLOW_CONN_{TOKEN_STORE.upper()}"] = server.embedded.connection_env("tokens")
    with closing(connect(TOKEN_STORE)) as conn:
        ensure_schema(conn)

    now = dt.datetime.now(dt.UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - args.hours * HOUR
    clock = {"offset": 0.0}
    settings = EmulatorSettings(strava=StravaSettings(years=1), google=GoogleSettings(years=1), seed=args.seed)
    failed_tries, faults = 0, collections.Counter[str]()
    with start_emulator(settings) as emulator:
        emulator.state.clock = lambda: time.time() + clock["offset"]
        tokens.utcnow = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(seconds=clock["offset"])
        # the shared Strava budget's windows move with the emulator's hours (300 of them in minutes)
        strava_hook.rate_limit_clock = lambda: time.time() + clock["offset"]
        store = {"credential_store_conn_id": TOKEN_STORE, "backoff_factor": 0.05, "read_timeout": 1}
        os.environ["AIRFLOW_CONN_STRAVA_DEFAULT"] = emulator_connection_env(emulator.url, **store)
        os.environ["AIRFLOW_CONN_FITBIT_DEFAULT"] = emulator_connection_env(emulator.url, "fitbit", **store)
        os.environ["AIRFLOW_CONN_FITNESS_DB"] = server.embedded.connection_env("soak")
        dag = load_dag()
        started = time.monotonic()
        for hour in range(1, args.hours + 1):
            interval_end = start + hour * HOUR
            clock["offset"] = (interval_end + dt.timedelta(minutes=2)).timestamp() - time.time()
            athlete_acts(rng, emulator, interval_end)
            fault = rng.choice([*API_FAULTS, *CRASH_KINDS]) if rng.random() < args.fault_rate else None
            watcher, report, injected = None, {}, emulator.stats()["faults_injected"]
            if fault in API_FAULTS:
                requests.post(f"{emulator.url}/_emulator/faults", json=API_FAULTS[fault], timeout=5).raise_for_status()
            elif fault in CRASH_KINDS:
                # the load waits for this lock when PostgreSQL dies
                watcher = crash_when_blocked(server, "soak", "LOCK TABLE strava_activity IN EXCLUSIVE MODE",
                                             CRASH_KINDS[fault], report, waiting="%strava_activity%")
            run = dag.test(logical_date=interval_end, run_conf={"daily_full_reconcile": True})
            if watcher is not None:
                watcher.join(timeout=180)
            requests.delete(f"{emulator.url}/_emulator/faults", timeout=5).raise_for_status()
            failed = failed_task_count(run)
            failed_tries += failed
            # counted only when it happened: an API fault the emulator served, a crash that hit a waiting load
            if (fault in API_FAULTS and emulator.stats()["faults_injected"] > injected) or report.get("waited"):
                faults[fault] += 1
            if hour % 25 == 0:
                print(f"  hour {hour}/{args.hours}: {sum(faults.values())} faults, {failed_tries} failed tries, "
                      f"{time.monotonic() - started:.0f} s", flush=True)
        # one clean run, the hour after the last
        last_end = start + (args.hours + 1) * HOUR
        clock["offset"] = (last_end + dt.timedelta(minutes=2)).timestamp() - time.time()
        clean = dag.test(logical_date=last_end, run_conf={"daily_full_reconcile": False})
        failed_tries += failed_task_count(clean)
        clean_ok = "success" in str(clean.state).lower()
        # the reference: one fault-free history import into its own database
        os.environ["AIRFLOW_CONN_FITNESS_DB"] = server.embedded.connection_env("reference")
        reference = dag.test(logical_date=last_end, run_conf={
            "history_start": "2000-01-01", "history_end": (last_end + dt.timedelta(days=1)).date().isoformat()})
        reference_ok = "success" in str(reference.state).lower()
        lost, duplicated, stale = compare(server, start - dt.timedelta(hours=72), last_end)
    server.stop()

    equal = clean_ok and reference_ok and not (lost or duplicated or stale)
    for kind in [*API_FAULTS, *CRASH_KINDS]:
        print(f"  {faults[kind]:4d}  {kind}")
    print(f"soak: {args.hours} hours, {sum(faults.values())} faults injected ({len(faults)} kinds), "
          f"{failed_tries} failed tries, {lost} lost, {duplicated} duplicated, {stale} stale, "
          f"tables equal: {'yes' if equal else 'no'}")
    return 0 if equal else 1


def load_dag() -> Any:
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "fitness_sync.py"))
    assert bag.import_errors == {}, bag.import_errors
    dag = bag.get_dag("fitness_sync")
    for task in dag.tasks:
        task.retries = 0  # a fault shows as a failed try; the next hourly run is the retry
    return dag


def athlete_acts(rng: random.Random, emulator: Any, at: dt.datetime) -> None:
    """What a person does in an hour: upload (sometimes late), edit or delete a recent activity, weigh in."""
    import requests

    base = f"{emulator.url}/_emulator"
    if rng.random() < 0.3:  # an upload of something done in the last two days
        started = at - dt.timedelta(minutes=rng.randrange(30, 48 * 60))
        requests.post(f"{base}/strava/activities", timeout=5, json={
            "start_date": started.isoformat().replace("+00:00", "Z"),
            "sport_type": rng.choice(["Run", "Ride", "Walk", "Swim"]), "name": f"soak {rng.randrange(10**6)}"})
    recent = [a["id"] for a in emulator.state.strava.find_activities(
        lambda a: at - dt.timedelta(hours=48) < dt.datetime.fromisoformat(a["start_date"]) < at)]
    if recent and rng.random() < 0.1:
        requests.put(f"{base}/strava/activities/{rng.choice(recent)}", timeout=5,
                     json={"name": f"edited {rng.randrange(10**6)}"})
    if recent and rng.random() < 0.05:
        requests.delete(f"{base}/strava/activities/{rng.choice(recent)}", timeout=5)
    if rng.random() < 0.15:
        requests.post(f"{base}/google/weight", timeout=5, json={
            "physicalTime": (at - dt.timedelta(minutes=rng.randrange(5, 50))).isoformat().replace("+00:00", "Z"),
            "utcOffset": rng.choice([-25200, 0, 3600, 32400]), "grams": rng.randrange(70000, 95000)})


def failed_task_count(run: Any) -> int:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        found = session.query(DagRun).filter_by(dag_id="fitness_sync", run_id=run.run_id).one()
        return sum(1 for ti in found.get_task_instances(session=session)
                   if str(ti.state).split(".")[-1].lower() == "failed")


#: what is compared, per table: the column that must lie inside the hours the soak covered (None: every row)
COMPARED = {"strava_activity": "start_date", "fitbit_weight": "measured_at", "fitbit_height": None,
            "fitbit_calories": "record_date"}


def compare(server: Any, lower: dt.datetime, upper: dt.datetime) -> tuple[int, int, int]:
    """(lost, duplicated, stale) between the soaked and the reference database, over live rows whose time
    column lies in the hours the soak's windows covered (calories: the whole days inside them)."""
    import psycopg

    from fitness_pipeline.schema import metadata

    lost = duplicated = stale = 0
    with psycopg.connect(server.embedded.dsn("soak")) as soaked, psycopg.connect(
            server.embedded.dsn("reference")) as reference:
        for name, column in COMPARED.items():
            table = metadata.tables[name]
            mine = live_rows(soaked, table, column, lower, upper)
            theirs = live_rows(reference, table, column, lower, upper)
            lost += len(theirs.keys() - mine.keys())
            duplicated += len(mine.keys() - theirs.keys())
            stale += sum(1 for k in mine.keys() & theirs.keys() if mine[k] != theirs[k])
    return lost, duplicated, stale


def live_rows(conn: Any, table: Any, column: str | None, lower: dt.datetime, upper: dt.datetime) -> dict[Any, Any]:
    """The rows of ``table`` not marked deleted (load timestamps left out) by key, ``column`` inside the range."""
    from fitness_devtools.table_digest import table_rows

    names = [c.name for c in table.columns if c.name not in ("first_seen", "last_time")]
    # the whole key: (athlete_id, id) for the tables keyed per athlete
    key = [names.index(column.name) for column in table.primary_key.columns]
    days = (lower.date() + dt.timedelta(days=1), upper.date() - dt.timedelta(days=1))
    rows = {}
    with conn.cursor() as cur:
        for row in table_rows(cur, table):
            values = dict(zip(names, row, strict=True))
            if values.get("deleted_at"):
                continue
            if column is not None:
                when = values[column]
                low, high = (lower, upper) if isinstance(when, dt.datetime) else days
                if not low <= when < high:
                    continue
            rows[tuple(row[i] for i in key)] = row
    return rows


if __name__ == "__main__":
    sys.exit(main())

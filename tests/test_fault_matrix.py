"""The fault matrix, API part (issue 10): a fault of one API in a real ``dag.test()`` run is either retried
and correct, or a clear failure of that API's sources only; after the next clean run the tables equal a
fault-free reference run's (digest over every column but the load timestamps), nothing is left in the
hand-over tables, and no secret or token used appears in any log.

Strava and Google are served by two emulators, so a fault of one cannot touch the other. The reference
run goes first, into a database of its own, against the same emulators; both databases share one token
store (connection extra ``credential_store_conn_id``), so a rotated refresh token serves both.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from fitness_devtools.table_digest import leftover_handover_rows, table_digests
from tests.helpers import connect_db
from tests.test_dag import run_dag, this_hour
from tests.test_history import succeeded, task_states

pytestmark = pytest.mark.usefixtures("airflow_db")

SOURCES_OF = {"strava": ("strava_activity",), "google": ("fitbit_weight", "fitbit_calories")}
LOOKBACK_HOURS = 24 * 10
TOKEN_STORE = "fitness_tokens"


@dataclass(frozen=True)
class ApiFault:
    """Emulator fault switches (``/_emulator/faults``) and what the run they hit must do."""

    name: str
    switches: dict[str, Any]
    #: "retried": the run succeeds; "fails alone": the API's sources may fail, every other source loads;
    #: "needs a person": as "fails alone", and the next run loads only once the athlete authorized again.
    #: Per API where they differ: {"strava": ..., "google": ...}
    outcome: str | dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)  # connection extras for the faulty API
    #: the API's clock this many seconds off the worker's, from the fault's run on
    skew_seconds: float = 0
    #: settings of the faulty API's emulator, per API (StravaSettings or GoogleSettings fields)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the athlete revokes the app's access before the fault's run
    revoke: bool = False

    def outcome_for(self, api: str) -> str:
        return self.outcome if isinstance(self.outcome, str) else self.outcome[api]


FAULTS = [
    ApiFault("5xx burst shorter than the retries", {"fail_next": 2, "fail_status": 503}, "retried"),
    ApiFault("5xx burst longer than the retries", {"fail_next": 200, "fail_status": 502}, "fails alone"),
    ApiFault("truncated JSON body", {"malformed_next": 1}, "fails alone"),
    ApiFault("answer slower than the read timeout", {"slow_next": 1, "slow_seconds": 2.5}, "retried",
             {"read_timeout": 1}),
    ApiFault("token endpoint 5xx longer than the retries", {"token_fail_next": 50, "token_fail_status": 503},
             "fails alone"),
    ApiFault("200 with an HTML page for a body", {"html_next": 1}, "fails alone"),
    ApiFault("the right JSON under a wrong content type", {"wrong_type_next": 2}, "retried"),
    ApiFault("connection closed mid-body", {"cut_next": 1}, "fails alone"),
    ApiFault("429 without rate-limit headers", {"fail_next": 1, "fail_status": 429}, "retried",
             {"rate_limit_window_seconds": 2}),
    # Strava: the 15-minute window spent (its usage headers say so), the hook waits for the next window;
    # Google: Retry-After: 1, the hook waits that long
    ApiFault("429 with rate-limit headers", {"rate_limit_next": 1, "retry_after_seconds": 1}, "retried",
             {"rate_limit_window_seconds": 2}, settings={"strava": {"rate_window_seconds": 2}}),
    # the refresh went through and its answer was lost (a token 5xx is not retried inside the try: the request
    # may have rotated the token). Strava rotated the refresh token (every refresh does, with
    # same_token_min_remaining that high), so the one we hold is dead and only the athlete can help; Google
    # keeps refresh tokens, so the next try refreshes with the same one
    ApiFault("token endpoint 5xx after it rotated", {"token_rotate_fail_next": 1, "token_fail_status": 503},
             {"strava": "needs a person", "google": "fails alone"},
             settings={"strava": {"same_token_min_remaining": 10**9}}),
    ApiFault("refresh token revoked (invalid_grant)", {}, "needs a person", revoke=True),
    ApiFault("API clock 10 minutes ahead", {}, "retried", skew_seconds=600),
    ApiFault("API clock 10 minutes behind", {}, "retried", skew_seconds=-600),
]


def quiet_moment(emulators: list[Any], margin: float = 600) -> float:
    """A moment (at most a few hours ago) with nothing of the emulated athletes within ``margin`` seconds
    either side: emulator clocks frozen there, or moved by a skew of up to ``margin``, all show the same data
    (else a weigh-in or meal in those minutes shows up in one run and not in another, by time of day)."""
    from fitness_emulator.google_data import DATA_TYPES, Bounds

    moment = time.time() - margin - 1  # the emulator shows nothing of the future: look where it is all past
    for _ in range(48):
        lower, upper = moment - margin, moment + margin
        points = [p for emulator in emulators for data_type in DATA_TYPES
                  for p in emulator.state.google.store.listed(data_type, Bounds(lower, upper + 1))]
        activities = [a for emulator in emulators for a in emulator.state.strava.find_activities(
            lambda a, lower=lower, upper=upper: lower <= dt.datetime.fromisoformat(a["start_date"]).timestamp()
            <= upper)]
        if not points and not activities:
            return moment
        moment -= 300
    raise AssertionError("no quiet moment in the last four hours")


def secrets_of(emulators: list[Any], postgres: Any, token_db: str) -> set[str]:
    """Every client secret, refresh token and access token the runs used."""
    found: set[str] = set()
    for emulator in emulators:
        for side in ("strava", "fitbit"):
            conn = requests.get(f"{emulator.url}/_emulator/{side}/connection", timeout=10).json()
            found |= {conn.get("password") or "", str(conn.get("extra", {}).get("refresh_token") or "")}
    with closing(connect_db(postgres, token_db)) as conn, conn.cursor() as cur:
        cur.execute("SELECT refresh_token, coalesce(access_token, '') FROM oauth_token")
        for refresh, access in cur.fetchall():
            found |= {refresh, access}
    return {s for s in found if len(s) >= 8}


def authorize_again(emulator: Any, side: str) -> None:
    """What the athlete does with ``python -m fitness_pipeline.authorize``: consent, and the code exchanged
    for a new refresh token (which the emulator's connection then carries)."""
    conn = requests.get(f"{emulator.url}/_emulator/{'strava' if side == 'strava' else 'fitbit'}/connection",
                        timeout=10).json()
    path, code = ("/oauth/token", "demo-code") if side == "strava" else ("/token", "demo-google-code")
    form = {"client_id": conn["login"], "client_secret": conn["password"], "grant_type": "authorization_code",
            "code": code, "redirect_uri": "http://127.0.0.1/callback"}
    requests.post(f"{emulator.url}{path}", data=form, timeout=10).raise_for_status()


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
@pytest.mark.parametrize("api", ["strava", "google"])
def test_an_api_fault_is_retried_or_fails_that_api_alone_and_nothing_is_lost(
        api: str, fault: ApiFault, postgres: Any, fitness_db: str, make_emulator: Any, connect_strava: Any,
        connect_fitbit: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    reference_db = f"t_ref_{uuid.uuid4().hex[:10]}"
    postgres.create_database(reference_db)
    try:
        monkeypatch.setenv(f"AIRFLOW_CONN_{TOKEN_STORE.upper()}", postgres.connection_env(reference_db))
        strava = make_emulator(**(fault.settings.get("strava", {}) if api == "strava" else {}))
        google = make_emulator(google=fault.settings.get("google") if api == "google" else None)
        frozen = quiet_moment([strava, google])
        for emulator in (strava, google):
            emulator.state.clock = lambda: frozen
        store = {"credential_store_conn_id": TOKEN_STORE}
        connect_strava(strava, **store, **(fault.extra if api == "strava" else {}))
        connect_fitbit(google, **store, **(fault.extra if api == "google" else {}))
        hour = this_hour()
        printed: list[str] = []  # what the tasks printed, read before the end

        # the reference: fault-free, into its own database (its ensure_schema makes the token store's table)
        monkeypatch.setenv("AIRFLOW_CONN_FITNESS_DB", postgres.connection_env(reference_db))
        assert succeeded(run_dag(hour, lookback_hours=LOOKBACK_HOURS))
        monkeypatch.setenv("AIRFLOW_CONN_FITNESS_DB", postgres.connection_env(fitness_db))

        with closing(connect_db(postgres, reference_db)) as tokens, tokens.cursor() as cur:
            cur.execute("UPDATE oauth_token SET expires_at = now() - interval '1 minute'")  # the next run refreshes
            tokens.commit()
        faulty = strava if api == "strava" else google
        before = faulty.stats()["faults_injected"]
        requests.post(f"{faulty.url}/_emulator/faults", json=fault.switches, timeout=5).raise_for_status()
        if fault.skew_seconds:
            faulty.state.clock = lambda: frozen + fault.skew_seconds
        side = "strava" if api == "strava" else "google"
        if fault.revoke:
            requests.post(f"{faulty.url}/_emulator/{side}/revoke", timeout=5).raise_for_status()
        hit = run_dag(hour, lookback_hours=LOOKBACK_HOURS)
        injected = fault.skew_seconds or fault.revoke or faulty.stats()["faults_injected"] > before
        assert injected, "the fault was never injected"
        states = task_states(hit)
        outcome = fault.outcome_for(api)
        if outcome == "retried":
            assert succeeded(hit), states
        else:
            others = [s for other, sources in SOURCES_OF.items() if other != api for s in sources]
            assert all(states[f"{s}.load"] == "success" for s in others), states
            assert any(states[f"{s}.extract"] == "failed" for s in SOURCES_OF[api]), states
        requests.delete(f"{faulty.url}/_emulator/faults", timeout=5).raise_for_status()
        if outcome == "needs a person":
            assert not succeeded(run_dag(hour, lookback_hours=LOOKBACK_HOURS))  # it stays broken until then
            printed.append(capsys.readouterr().out)
            assert "new refresh token in the connection" in (caplog.text + printed[-1]).lower()  # what to do
            authorize_again(faulty, side)
            connect = connect_strava if api == "strava" else connect_fitbit
            connect(faulty, **store, **fault.extra)

        assert succeeded(run_dag(hour, lookback_hours=LOOKBACK_HOURS))  # the next run, fault gone
        with closing(connect_db(postgres, fitness_db)) as after, \
                closing(connect_db(postgres, reference_db)) as reference:
            assert table_digests(after) == table_digests(reference)
            assert leftover_handover_rows(after) == {}

        logged = caplog.text + "".join(printed) + "".join(capsys.readouterr())
        assert "strava_activity: landed" in logged  # the tasks' logs are in what is searched
        secrets = secrets_of([strava, google], postgres, reference_db)
        assert secrets, "no secret found to look for"
        assert [s[:4] + "..." for s in secrets if s in logged] == []
    finally:
        postgres.drop_database(reference_db)


# --- PostgreSQL killed during a step ---------------------------------------------------------------------

@dataclass(frozen=True)
class Crash:
    """A lock that makes the step wait inside PostgreSQL, so the crash lands while it is there."""

    step: str
    held: str  # what the lock holds, for the test's id
    lock: str
    mode: Any  # KillablePostgres.kill mode
    #: the statement of that step that must be the one waiting (SQL LIKE), not housekeeping on the same table
    waiting: str = "%"


CRASHES = [
    Crash("ensure_schema", "its advisory lock", "SELECT pg_advisory_lock(x'66697473'::int)", "sigkill",
          "%pg_advisory_xact_lock%"),
    Crash("an extract page commit", "raw_record", "LOCK TABLE raw_record IN EXCLUSIVE MODE", "immediate",
          "%raw_record%batch_id%"),
    Crash("a transform", "stage_strava_activity", "LOCK TABLE stage_strava_activity IN EXCLUSIVE MODE", "sigkill",
          "%stage_strava_activity%batch_id%"),
    Crash("a load", "strava_activity", "LOCK TABLE strava_activity IN EXCLUSIVE MODE", "immediate",
          "%strava_activity%"),
    Crash("a load", "fitbit_weight", "LOCK TABLE fitbit_weight IN EXCLUSIVE MODE", "sigkill", "%fitbit_weight%"),
]


@pytest.mark.parametrize("crash", CRASHES, ids=[f"{c.step} ({c.held}, {c.mode})" for c in CRASHES])
def test_postgresql_killed_during_a_step_loses_nothing(
        crash: Crash, postgres: Any, fitness_db: str, all_connections: Any, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Any) -> None:
    from fitness_devtools.killable_postgres import KillablePostgres, crash_when_blocked
    from fitness_pipeline.ddl import ensure_schema

    emulator = all_connections
    frozen = quiet_moment([emulator])
    emulator.state.clock = lambda: frozen
    hour = this_hour()
    # the reference (and the token store) on the test session's server, which is never killed
    monkeypatch.setenv(f"AIRFLOW_CONN_{TOKEN_STORE.upper()}", postgres.connection_env(fitness_db))
    for side, connect in (("strava", "AIRFLOW_CONN_STRAVA_DEFAULT"), ("fitbit", "AIRFLOW_CONN_FITBIT_DEFAULT")):
        from fitness_devtools.embedded_stack import emulator_connection_env

        monkeypatch.setenv(connect, emulator_connection_env(emulator.url, side, backoff_factor=0.05,
                                                            credential_store_conn_id=TOKEN_STORE))
    assert succeeded(run_dag(hour, lookback_hours=LOOKBACK_HOURS))

    server = KillablePostgres(tmp_path / "pgdata")
    try:
        server.embedded.create_database("crashed")
        monkeypatch.setenv("AIRFLOW_CONN_FITNESS_DB", server.embedded.connection_env("crashed"))
        if crash.step != "ensure_schema":  # the tables to lock must exist
            with closing(connect_db(server.embedded, "crashed")) as conn:
                ensure_schema(conn)
        report: dict[str, Any] = {}
        watcher = crash_when_blocked(server, "crashed", crash.lock, crash.mode, report, waiting=crash.waiting)
        hit = run_dag(hour, lookback_hours=LOOKBACK_HOURS)
        watcher.join(timeout=180)
        assert report.get("waited"), f"no statement like {crash.waiting} waited: the crash did not land in {crash.step}"
        assert not succeeded(hit), task_states(hit)  # a task lost its database: it failed (Airflow retries it)

        assert succeeded(run_dag(hour, lookback_hours=LOOKBACK_HOURS))  # the next run, on the restarted server
        with closing(connect_db(server.embedded, "crashed")) as after, \
                closing(connect_db(postgres, fitness_db)) as reference:
            assert table_digests(after) == table_digests(reference)
            assert leftover_handover_rows(after) == {}
    finally:
        server.stop()


# --- the task process SIGKILLed during transform or load of a history import ------------------------------

STEP_IN_A_PROCESS = """
import json, sys
from fitness_pipeline.handover import Extracted, Staged
from fitness_pipeline.tasks.load import load
from fitness_pipeline.tasks.transform import transform
step, handed_over = sys.argv[1], json.loads(sys.argv[2])
if step == "transform":
    transform(Extracted.from_xcom(handed_over))
else:
    load(Staged.from_xcom(handed_over))
"""


@pytest.mark.parametrize("then", ["the step retried", "a new run"])
@pytest.mark.parametrize("step", ["transform", "load"])
def test_task_killed_during_transform_or_load_of_an_import(step: str, then: str, postgres: Any, fitness_db: str,
                                                           schema: Any, all_connections: Any) -> None:
    """The step waits inside PostgreSQL (a lock held on its table) when its process is SIGKILLed; then either
    the retry of that step or a new DAG run of the import (the user triggered it again) loads exactly the
    emulator's activities, once each, and no hand-over rows are left (the new run removes the dead batch's)."""
    import datetime as dt
    import json
    import os
    import subprocess
    import sys
    import time

    import psycopg

    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.tasks.load import load
    from fitness_pipeline.tasks.transform import transform
    from fitness_pipeline.windows import Window
    from tests.helpers import query
    from tests.test_dag import emulator_activity_ids

    hour = this_hour()
    start = hour - dt.timedelta(days=360)
    extracted = extract("strava_activity", "import", Window(start, hour))
    staged = transform(extracted) if step == "load" else None
    handed_over = (staged or extracted).to_xcom()
    table = "strava_activity" if step == "load" else "stage_strava_activity"
    with psycopg.connect(postgres.dsn(fitness_db)) as holder:
        holder.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        child = subprocess.Popen([sys.executable, "-c", STEP_IN_A_PROCESS, step, json.dumps(handed_over)],
                                 env=os.environ.copy())
        deadline = time.monotonic() + 60
        while not query(schema, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")[0][0]:
            assert time.monotonic() < deadline and child.poll() is None, "the step never reached its table"
            time.sleep(0.05)
        child.kill()  # SIGKILL while it waits inside PostgreSQL: no cleanup, like an OOM kill
        child.wait()
        holder.rollback()

    if then == "a new run":
        midnight = start.replace(hour=0)
        assert succeeded(run_dag(hour, history_start=midnight.date().isoformat(), sources=["strava_activity"]))
        expected = emulator_activity_ids(all_connections, midnight, hour)
    else:
        loaded = load(transform(extracted)) if step == "transform" else load(staged)  # the task's next try
        expected = emulator_activity_ids(all_connections, start, hour)
        assert loaded.inserted == len(expected)
    ids = [r[0] for r in query(schema, "SELECT id FROM strava_activity")]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(expected) and len(expected) > 200
    with closing(connect_db(postgres, fitness_db)) as conn:
        assert leftover_handover_rows(conn) == {}


# --- two at once ---------------------------------------------------------------------------------------------

def test_two_ensure_schema_at_once_on_a_new_database(fitness_db: str, db_conn: Any) -> None:
    """Two runs starting together (a backfill next to the hourly run) both create the schema: the advisory
    lock serializes them, neither fails, the second finds it made."""
    from concurrent.futures import ThreadPoolExecutor

    from fitness_pipeline.tasks.prepare import ensure_schema as ensure_schema_task
    from tests.helpers import query

    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: ensure_schema_task(), range(2)))
    created = sorted(len(report["created_tables"]) for report in reports)
    assert created[0] == 0 and created[1] > 10, created  # one made everything, the other nothing
    assert all(report["problems"] == {} for report in reports)
    assert query(db_conn, "SELECT count(*) FROM information_schema.views WHERE table_name = 'training_week'") \
        == [(1,)]


def test_two_runs_at_once_over_overlapping_windows(fitness_db: str, schema: Any, all_connections: Any) -> None:
    """A backfill's run and the hourly run sync overlapping windows at the same time: every activity once,
    none marked deleted, nothing left behind."""
    import datetime as dt
    from concurrent.futures import ThreadPoolExecutor

    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.tasks.load import load
    from fitness_pipeline.tasks.transform import transform
    from fitness_pipeline.windows import Window
    from tests.helpers import query
    from tests.test_dag import emulator_activity_ids

    hour = this_hour()
    day = dt.timedelta(days=1)
    windows = {"backfill": Window(hour - 40 * day, hour - 10 * day), "hourly": Window(hour - 25 * day, hour)}

    def sync(run_id: str) -> Any:
        return load(transform(extract("strava_activity", run_id, windows[run_id])))

    with ThreadPoolExecutor(2) as pool:
        loaded = list(pool.map(sync, windows))
    expected = emulator_activity_ids(all_connections, hour - 40 * day, hour)
    ids = [r[0] for r in query(schema, "SELECT id FROM strava_activity WHERE deleted_at IS NULL")]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(expected) and expected
    assert query(schema, "SELECT count(*) FROM strava_activity WHERE deleted_at IS NOT NULL") == [(0,)]
    assert sum(result.inserted for result in loaded) == len(expected)  # the overlap inserted once
    assert all(result.deleted == 0 for result in loaded)
    assert query(schema, "SELECT count(*) FROM raw_record") == [(0,)]


# --- listings that are not snapshots -------------------------------------------------------------------------

ANOMALIES = {
    "an item moving between pages (one deleted during the listing)": "listing_delete_next",
    "the same item on two pages (one uploaded during the listing)": "listing_insert_next",
    "an empty page followed by more data": "empty_page_next",
}


def upstream_keys(emulator: Any, api: str, start: dt.datetime, end: dt.datetime) -> set[str]:
    """What the emulated athlete has in ``[start, end)`` now: Strava activity ids or Google weight ids."""
    from fitness_emulator.google_data import Bounds
    from tests.test_dag import emulator_activity_ids

    if api == "strava":
        return {str(i) for i in emulator_activity_ids(emulator, start, end)}
    points = emulator.state.google.store.listed("weight", Bounds(start.timestamp(), end.timestamp()))
    return {str(point.id) for point in points}


def live_keys(conn: Any, api: str) -> set[str]:
    from tests.helpers import query

    table = "strava_activity" if api == "strava" else "fitbit_weight"
    return {str(row[0]) for row in query(conn, f"SELECT id FROM {table} WHERE deleted_at IS NULL")}


@pytest.mark.parametrize("anomaly", ANOMALIES, ids=list(ANOMALIES))
@pytest.mark.parametrize("api", ["strava", "google"])
def test_a_listing_anomaly_loses_nothing_and_marks_nothing_deleted_that_exists(
        api: str, anomaly: str, db_conn: Any, make_emulator: Any, connect_strava: Any, connect_fitbit: Any) -> None:
    """Pages of two, so a month spans several. The anomaly hits the run after a clean one: everything that
    still exists upstream stays live in that very run (nothing skipped is marked deleted, nothing is there
    twice), and the next run brings the tables to the athlete's data exactly."""
    strava = connect_strava(make_emulator(max_per_page=2))
    google = connect_fitbit(make_emulator(google={"max_page_size": 2, "listing_faults_data_type": "weight"}))
    frozen = time.time()
    for emulator in (strava, google):
        emulator.state.clock = lambda: frozen
    faulty = strava if api == "strava" else google
    hour = this_hour()
    lookback_hours = 24 * 30
    start = hour - dt.timedelta(hours=1 + lookback_hours)
    assert succeeded(run_dag(hour, lookback_hours=lookback_hours))
    held = live_keys(db_conn, api)
    assert len(held) >= 6, "the window should span several pages"

    before = faulty.stats()["faults_injected"]
    requests.post(f"{faulty.url}/_emulator/faults", json={ANOMALIES[anomaly]: 1}, timeout=5).raise_for_status()
    hit = run_dag(hour, lookback_hours=lookback_hours)
    assert faulty.stats()["faults_injected"] == before + 1, "the anomaly was never injected"
    assert succeeded(hit), task_states(hit)
    still_there = held & upstream_keys(faulty, api, start, hour)
    assert still_there - live_keys(db_conn, api) == set()  # none of them missing or marked deleted

    assert succeeded(run_dag(hour, lookback_hours=lookback_hours))
    assert live_keys(db_conn, api) == upstream_keys(faulty, api, start, hour)


# --- Strava's daily limit ------------------------------------------------------------------------------------

def test_strava_daily_limit_reschedules_to_utc_midnight_and_google_still_loads(
        db_conn: Any, make_emulator: Any, connect_strava: Any, connect_fitbit: Any) -> None:
    """The day's reads are spent (by other clients of the same application): the Strava extract gives its
    worker slot back until 00:00 UTC, the Google sources load meanwhile (the tasks run one at a time here, so
    Google's ran before the reschedule or while Strava waits). The run is then stopped the way a person would
    (its waiting task marked failed) and the next run, after the reset, loads Strava with nothing lost."""
    import threading

    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    strava = connect_strava(make_emulator())
    connect_fitbit(make_emulator())
    hour = this_hour()
    requests.post(f"{strava.url}/_emulator/faults", json={"daily_limit_next": 1}, timeout=5).raise_for_status()
    seen: dict[str, Any] = {}

    def stop_once_rescheduled() -> None:  # dag.test() must run in the main thread (Airflow sets SIGALRM)
        try:
            watch()
        except BaseException as error:
            seen["error"] = error
            raise

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(1)
            with create_session() as session:
                run = session.query(DagRun).filter_by(dag_id="fitness_sync").order_by(DagRun.id.desc()).first()
                if run is None:
                    continue
                tis = run.get_task_instances(session=session)
                seen["states"] = {ti.task_id: str(ti.state).split(".")[-1].lower() for ti in tis}
                seen["rescheduled"] = [r.reschedule_date for ti in tis if ti.task_id == "strava_activity.extract"
                                       for r in _reschedules(session, ti)]
                states = seen["states"]
                waiting = states.get("strava_activity.extract") == "up_for_reschedule"
                google_done = all(states.get(f"{s}.load") == "success" for s in SOURCES_OF["google"])
                if (waiting and google_done) or {"failed", "upstream_failed"} & set(states.values()):
                    # what a person does with a task that waits for tomorrow: mark it failed (the run ends)
                    for ti in tis:
                        if ti.task_id == "strava_activity.extract" and waiting:
                            ti.state = TaskInstanceState.FAILED
                    return

    watcher = threading.Thread(target=stop_once_rescheduled, daemon=True)
    watcher.start()
    started = dt.datetime.now(dt.UTC)
    run_dag(hour, lookback_hours=LOOKBACK_HOURS)
    watcher.join(timeout=10)
    assert "error" not in seen, seen["error"]
    states = seen.get("states", {})
    assert states.get("strava_activity.extract") == "up_for_reschedule", states
    assert all(states[f"{s}.load"] == "success" for s in SOURCES_OF["google"]), states
    rescheduled = seen["rescheduled"]
    midnights = {(moment + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
                 for moment in (started, dt.datetime.now(dt.UTC))}  # a run across 00:00 UTC: either
    assert rescheduled and any(abs((rescheduled[-1] - m).total_seconds()) < 120 for m in midnights), rescheduled

    # midnight: Strava's counts start again, and so does the shared budget (which holds the day as spent)
    requests.delete(f"{strava.url}/_emulator/strava/rate-limits", timeout=5).raise_for_status()
    with db_conn.cursor() as cur:
        cur.execute("DELETE FROM api_budget")
    db_conn.commit()
    assert succeeded(run_dag(hour, lookback_hours=LOOKBACK_HOURS))
    start = hour - dt.timedelta(hours=1 + LOOKBACK_HOURS)
    assert live_keys(db_conn, "strava") == upstream_keys(strava, "strava", start, hour)
    from fitness_devtools.table_digest import leftover_handover_rows

    assert leftover_handover_rows(db_conn) == {}


def _reschedules(session: Any, ti: Any) -> list[Any]:
    from airflow.models.taskreschedule import TaskReschedule

    return session.query(TaskReschedule).filter(TaskReschedule.ti_id == ti.id).all()


def test_a_try_stopped_during_the_second_listing_is_resumed_by_the_next(
        schema: Any, make_emulator: Any, connect_strava: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An activity is deleted during the listing, so one is skipped and listed again; the try stops right
    after that second listing landed a page (a 5xx, a kill, a reschedule). The next try of the same batch
    resumes after everything landed (no record numbered twice), and the load keeps every activity live."""
    from fitness_pipeline.errors import RetriableError
    from fitness_pipeline.hooks.strava import StravaHook
    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.tasks.load import load
    from fitness_pipeline.tasks.transform import transform
    from fitness_pipeline.windows import Window

    strava = connect_strava(make_emulator(max_per_page=2))
    hour = this_hour()
    window = Window(hour - dt.timedelta(days=30), hour)
    load(transform(extract("strava_activity", "clean", window)))
    held = live_keys(schema, "strava")
    assert len(held) >= 6

    listings = {"n": 0}
    original = StravaHook.iter_activity_pages

    def stops_in_the_second_listing(self: Any, *args: Any, **kwargs: Any) -> Any:
        listings["n"] += 1
        for page in original(self, *args, **kwargs):
            yield page
            if listings["n"] == 2:  # its first page landed
                raise RetriableError("the try stops here")

    requests.post(f"{strava.url}/_emulator/faults", json={"listing_delete_next": 1}, timeout=5).raise_for_status()
    monkeypatch.setattr(StravaHook, "iter_activity_pages", stops_in_the_second_listing)
    with pytest.raises(RetriableError, match="the try stops here"):
        extract("strava_activity", "hourly", window)
    assert listings["n"] == 2, "the second listing never ran"
    monkeypatch.setattr(StravaHook, "iter_activity_pages", original)
    loaded = load(transform(extract("strava_activity", "hourly", window)))  # the next try of the same batch
    still_there = held & upstream_keys(strava, "strava", window.start, window.end)
    assert still_there - live_keys(schema, "strava") == set()
    assert loaded.deleted == 0

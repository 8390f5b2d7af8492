"""`airflow backfill create` on Airflow 3 with real components: API server, scheduler and
dag-processor (LocalExecutor, SQLite) started on the embedded defaults, six hourly runs
backfilled against the emulator, and the tables they leave equal to a one-shot import of
the same range."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import time
from contextlib import closing
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from fitness_devtools.embedded_stack import EmbeddedPostgres, airflow_env
from fitness_pipeline import schema
from tests.helpers import connect_db, query
from tests.test_dag import emulator_activity_ids, run_dag, this_hour

AIRFLOW_MAJOR = int(version("apache-airflow").split(".")[0])
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("airflow_db"),
              pytest.mark.skipif(AIRFLOW_MAJOR < 3, reason="`airflow backfill create` is Airflow 3's")]

DAG_ID = "fitness_sync"
RUNS = 6
HOUR = dt.timedelta(hours=1)
LOOKBACK = dt.timedelta(hours=72)  # the DAG's default lookback_hours
BACKFILL_TIMEOUT = 180.0
TERMINAL = {"success", "failed"}
LOADED_TABLES = (schema.strava_activity, schema.fitbit_weight, schema.fitbit_height, schema.fitbit_calories)


def backfill_range() -> tuple[dt.datetime, dt.datetime]:
    """Logical dates (= data interval starts) of the first and last of six hourly runs, 06:00-11:00
    UTC three days ago: no run ends at 00:00 (the daily full reconciliation), and every civil date
    their windows touch is over in every time zone, so upstream data cannot move during the test."""
    first = (this_hour() - 3 * dt.timedelta(days=1)).replace(hour=6)
    return first, first + (RUNS - 1) * HOUR


def table_contents(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Each loaded table's data columns and whether the row is live, by key (not first_seen,
    last_time, xmin: those say when, and differ between the two imports); and the quarantine."""
    contents = {}
    for table in LOADED_TABLES:
        columns = [c.name for c in schema.data_columns(table)]
        live = f", {schema.DELETED_AT} IS NULL" if schema.DELETED_AT in table.c else ""
        contents[table.name] = query(conn, f"SELECT {', '.join(columns)}{live} FROM {table.name} ORDER BY 1")
    contents["quarantine"] = query(conn, "SELECT source, record_key, reason FROM quarantine ORDER BY 1, 2")
    return contents


def wait_for_backfill_runs(airflow: Any, count: int, timeout: float) -> list[dict[str, Any]]:
    """Until ``count`` backfill runs of the DAG are finished; their REST API records, by logical date."""
    deadline = time.monotonic() + timeout
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        airflow.check_running()
        runs = [r for r in airflow.dag_runs(DAG_ID) if r["run_type"] == "backfill"]
        if len(runs) == count and all(r["state"] in TERMINAL for r in runs):
            return sorted(runs, key=lambda r: r["logical_date"])
        time.sleep(1)
    states = {r["dag_run_id"]: r["state"] for r in runs}
    raise TimeoutError(f"backfill not finished after {timeout:.0f} s: {states}")


def with_token_store(conn_env: str, credential_store_conn_id: str) -> str:
    """A connection (JSON form) with its tokens kept in ``credential_store_conn_id``'s database."""
    conn = json.loads(conn_env)
    conn["extra"] = {**(conn.get("extra") or {}), "credential_store_conn_id": credential_store_conn_id}
    return json.dumps(conn)


def one_shot_import(postgres: EmbeddedPostgres, database: str, monkeypatch: pytest.MonkeyPatch,
                    start: dt.datetime, end: dt.datetime) -> dict[str, list[tuple[Any, ...]]]:
    """Import ``[start, end)`` in one dag.test() run (in-process, the session's Airflow) into a new
    ``database``; its table contents. The API tokens stay in the first database's store, shared
    with the backfill's tasks running at the same time: the emulator rotates refresh tokens, and two
    stores seeded with one token would lock each other out (see the README)."""
    postgres.create_database(database)
    try:
        monkeypatch.setenv("AIRFLOW_CONN_TOKEN_STORE", os.environ["AIRFLOW_CONN_FITNESS_DB"])
        for name in ("AIRFLOW_CONN_STRAVA_DEFAULT", "AIRFLOW_CONN_FITBIT_DEFAULT"):
            monkeypatch.setenv(name, with_token_store(os.environ[name], "token_store"))
        monkeypatch.setenv("AIRFLOW_CONN_FITNESS_DB", postgres.connection_env(database))
        dag_run = run_dag(end, history_start=start.isoformat(), history_end=end.isoformat())
        assert "success" in str(dag_run.state).lower(), f"one-shot import: {dag_run.state}"
        with closing(connect_db(postgres, database)) as conn:
            return table_contents(conn)
    finally:
        postgres.drop_database(database)


def test_backfill_of_six_hours_equals_a_one_shot_import(
        postgres: EmbeddedPostgres, fitness_db: str, all_connections: Any, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    from fitness_devtools.airflow_components import AirflowComponents

    emulator = all_connections
    first, last = backfill_range()
    window_start, window_end = first - LOOKBACK, last + HOUR  # what the six runs fetch together
    timings = {"start": time.monotonic()}
    # its own metadata database: the session's one holds the dag.test() runs of other tests
    airflow = AirflowComponents({**os.environ, **airflow_env(tmp_path / "airflow")},  # os.environ: the connections
                                tmp_path / "components")
    airflow.cli("db", "migrate")
    # Serialized and queued before any component runs: on SQLite, the CLI inserting the runs while the
    # scheduler and dag-processor write (heartbeats, parsing) fails with "database is locked" now and then.
    airflow.cli("dags", "reserialize")
    created = airflow.cli(
        "backfill", "create", "--dag-id", DAG_ID, "--from-date", first.isoformat(), "--to-date", last.isoformat(),
        "--max-active-runs", "1",  # backfills ignore the DAG's max_active_runs=1; the runs' windows overlap
        "--dag-run-conf", json.dumps({"daily_full_reconcile": False}))
    timings["backfill queued"] = time.monotonic()
    with airflow.running():
        timings["components ready"] = time.monotonic()
        airflow.request("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})  # `airflow dags unpause`

        # the one-shot import of the same range, while the backfill runs (they share only the token store)
        one_shot = one_shot_import(postgres, f"{fitness_db}_one_shot", monkeypatch, window_start, window_end)
        timings["one-shot imported"] = time.monotonic()

        runs = wait_for_backfill_runs(airflow, RUNS, BACKFILL_TIMEOUT)
        timings["backfill finished"] = time.monotonic()
        failed = {run: {ti["task_id"]: ti["state"] for ti in airflow.task_instances(DAG_ID, run)
                        if ti["state"] != "success"}
                  for run in (r["dag_run_id"] for r in runs if r["state"] != "success")}
        assert not failed, f"backfill runs failed: {failed}\n{created.stdout}"
    timings["components stopped"] = time.monotonic()
    print(", ".join(f"{name} +{t - before:.1f} s" for (_, before), (name, t) in itertools.pairwise(timings.items())),
          "| CPU s:", {name: round(cpu, 1) for name, cpu in airflow.cpu_seconds.items()})

    parse = dt.datetime.fromisoformat
    intervals = [(parse(r["data_interval_start"]), parse(r["data_interval_end"])) for r in runs]
    assert intervals == [(first + i * HOUR, first + (i + 1) * HOUR) for i in range(RUNS)]
    assert all(r["conf"] == {"daily_full_reconcile": False} for r in runs)
    with closing(connect_db(postgres, fitness_db)) as conn:
        backfilled = table_contents(conn)
        windows = query(conn, "SELECT min(window_start), max(window_end), count(*) FROM sync_run "
                              "WHERE source = 'strava_activity'")
    assert windows == [(window_start, window_end, RUNS)]  # each run synced its own hour, none the whole history

    expected_ids = sorted(emulator_activity_ids(emulator, window_start, window_end))
    assert expected_ids, "the emulated athlete should have activities in four days"
    assert [row[0] for row in backfilled["strava_activity"]] == expected_ids
    # the athlete does not weigh in every day: as many weigh-ins as the emulator holds for the window (not none
    # by assumption), and the comparison below is not vacuous as long as Strava or the scale has data
    from fitness_emulator.google_data import Bounds

    weighed = emulator.state.google.store.listed("weight", Bounds(window_start.timestamp(), window_end.timestamp()))
    assert len(backfilled["fitbit_weight"]) == len(weighed)
    for table, rows in one_shot.items():
        assert backfilled[table] == rows, f"{table} differs between the backfill and the one-shot import"

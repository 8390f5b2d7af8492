"""The DAG: integrity (parses cleanly, is what the README says) and real runs with dag.test()."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import query

REPO = Path(__file__).resolve().parent.parent
DAG_FILE = REPO / "dags" / "fitness_sync.py"

pytestmark = pytest.mark.usefixtures("airflow_db")


def load_dag() -> Any:
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.get_dag("fitness_sync")


def test_dag_imports_without_errors_or_warnings_from_our_code() -> None:
    import airflow.models  # noqa: F401 - Airflow's own import-time warnings are not ours

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dag = load_dag()
    ours = [w for w in caught if str(REPO) in str(w.filename) and ".venv" not in str(w.filename)]
    assert ours == [], [f"{w.filename}:{w.lineno} {w.message}" for w in ours]
    assert dag is not None


def test_schedule_tasks_and_defaults_are_as_documented() -> None:
    dag = load_dag()
    timetable = dag.timetable
    assert type(timetable).__name__ == "CronDataIntervalTimetable"
    # Airflow 3 exposes these publicly; Airflow 2 only with a leading underscore
    assert getattr(timetable, "expression", None) or timetable._expression == "0 * * * *"
    assert "UTC" in str(getattr(timetable, "timezone", None) or timetable._timezone)
    assert dag.catchup is False
    assert dag.max_active_runs == 2  # a history import next to the hourly runs
    assert set(dag.task_ids) == {"ensure_schema", "athletes"} | {
        f"{group}.{step}" for group in ("strava_activity", "fitbit_weight", "fitbit_calories")
        for step in ("extract", "transform", "load")} | {"strava_activity.enrich"}
    enrich = dag.get_task("strava_activity.enrich")
    assert "strava_activity.load" in enrich.upstream_task_ids and enrich.trigger_rule == "none_failed"
    assert dag.params["detail_budget_share"] == 0.5
    assert dag.params["lookback_hours"] == 72
    assert {"fitness", "strava", "fitbit"} <= set(dag.tags)
    assert dag.doc_md and "fitness_sync" in dag.doc_md
    extract = dag.get_task("strava_activity.extract")
    assert extract.retries == 3 and extract.retry_exponential_backoff
    assert dag.get_task("strava_activity.load").upstream_task_ids == {"strava_activity.transform", "athletes"}
    for group in ("strava_activity", "fitbit_weight", "fitbit_calories"):
        # independent branches, mapped over the athletes, each mapped task labelled with the athlete's name
        assert dag.get_task(f"{group}.extract").upstream_task_ids == {"ensure_schema", "athletes"}
        for step in ("extract", "transform", "load"):
            assert dag.get_task(f"{group}.{step}").map_index_template == "{{ athlete_name }}"


def this_hour() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)


def run_dag(interval_end: dt.datetime, **conf: Any) -> Any:
    """One real run through dag.test() for the hour ending at ``interval_end`` (a manual run at that
    time gets the data interval [interval_end - 1 h, interval_end)). Retries off so a failure shows
    at once; the daily full reconciliation off unless asked for, so windows do not depend on the hour."""
    dag = load_dag()
    for task in dag.tasks:
        task.retries = 0
    conf.setdefault("daily_full_reconcile", False)
    return dag.test(logical_date=interval_end, run_conf=conf)


def table_contents(conn: Any) -> list[list[tuple[Any, ...]]]:
    return [query(conn, f"SELECT *, xmin::text FROM {table} ORDER BY 1")
            for table in ("strava_activity", "fitbit_weight", "fitbit_height", "fitbit_calories")]


def test_hourly_run_loads_all_sources_and_a_rerun_changes_nothing(db_conn: Any, all_connections: Any) -> None:
    emulator = all_connections
    hour = this_hour()
    lookback_hours = 24 * 60
    dag_run = run_dag(hour, lookback_hours=lookback_hours)
    assert "success" in str(dag_run.state).lower()

    window_start = hour - dt.timedelta(hours=1 + lookback_hours)
    expected = emulator_activity_ids(emulator, window_start, hour)
    assert expected, "the emulator's athlete should have activities in two months"
    loaded = [row[0] for row in query(db_conn, "SELECT id FROM strava_activity ORDER BY id")]
    assert loaded == sorted(expected)
    (sync,) = query(db_conn, "SELECT extracted, inserted, updated, unchanged, quarantined FROM sync_run "
                             "WHERE source = 'strava_activity'")
    assert sync == (len(expected), len(expected), 0, 0, 0)
    weights = query(db_conn, "SELECT count(*), count(fat), count(bmi) FROM fitbit_weight")[0]
    assert weights[0] > 10 and 0 < weights[1] < weights[0] and weights[2] == weights[0]
    assert query(db_conn, "SELECT count(*) FROM fitbit_calories")[0][0] > 40
    assert query(db_conn, "SELECT count(*) FROM quarantine") == [(0,)]
    # the hand-over tables are empty once a batch is loaded
    assert query(db_conn, "SELECT count(*) FROM raw_record") == [(0,)]
    assert query(db_conn, "SELECT count(*) FROM stage_strava_activity") == [(0,)]

    before = table_contents(db_conn)
    dag_run = run_dag(hour, lookback_hours=lookback_hours)
    assert "success" in str(dag_run.state).lower()
    assert table_contents(db_conn) == before  # same rows, same tuples (xmin), same last_time


def emulator_activity_ids(emulator: Any, start: dt.datetime, end: dt.datetime) -> list[int]:
    """What the emulated athlete did in ``(start, end)``, read from the emulator's own state."""
    def inside(activity: dict[str, Any]) -> bool:
        return start < dt.datetime.fromisoformat(activity["start_date"]) < end

    return [a["id"] for a in emulator.state.strava.find_activities(inside)]


def test_bad_record_is_quarantined_and_the_rest_of_the_batch_loads(db_conn: Any, all_connections: Any) -> None:
    emulator = all_connections
    hour = this_hour()
    week_ago = hour - dt.timedelta(days=7)
    assert "success" in str(run_dag(hour, lookback_hours=24 * 7).state).lower()
    broken, renamed = emulator_activity_ids(emulator, week_ago, hour)[:2]
    emulator.state.strava.activities.update(broken, {"distance": "far", "name": "Changed while broken"})
    emulator.state.strava.activities.update(renamed, {"name": "Renamed upstream"})

    assert "success" in str(run_dag(hour, lookback_hours=24 * 7).state).lower()
    (sync,) = query(db_conn, "SELECT updated, quarantined FROM sync_run WHERE source = 'strava_activity' "
                             "ORDER BY finished_at DESC LIMIT 1")
    assert sync == (1, 1)
    assert query(db_conn, "SELECT record_key, reason FROM quarantine") == [
        (str(broken), "distance must be a number, got str")]
    # the broken version did not overwrite the good row; the other change loaded
    names = dict(query(db_conn, "SELECT id, name FROM strava_activity WHERE id IN (%s, %s)", (broken, renamed)))
    assert names[renamed] == "Renamed upstream" and names[broken] != "Changed while broken"

    emulator.state.strava.activities.update(broken, {"distance": 1234.5})  # fixed upstream
    assert "success" in str(run_dag(hour, lookback_hours=24 * 7).state).lower()
    assert query(db_conn, "SELECT count(*) FROM quarantine") == [(0,)]
    assert query(db_conn, "SELECT distance, name FROM strava_activity WHERE id = %s", (broken,)) == [
        (1234.5, "Changed while broken")]


def test_google_side_failing_leaves_strava_loading_and_the_run_shows_it(db_conn: Any, all_connections: Any) -> None:
    from tests.test_history import task_states

    emulator = all_connections
    requests.post(f"{emulator.url}/_emulator/google/revoke", timeout=5).raise_for_status()
    dag_run = run_dag(this_hour(), lookback_hours=24 * 7)
    assert "failed" in str(dag_run.state).lower()
    states = task_states(dag_run)
    assert states["strava_activity.load"] == "success"
    assert states["fitbit_weight.extract"] == states["fitbit_calories.extract"] == "failed"
    assert states["fitbit_weight.load"] == states["fitbit_calories.load"] == "upstream_failed"
    assert query(db_conn, "SELECT count(*) > 0 FROM strava_activity") == [(True,)]
    assert query(db_conn, "SELECT source FROM sync_run") == [("strava_activity",)]


def test_the_demos_run_records_its_real_start_and_end(db_conn: Any, all_connections: Any) -> None:
    """`make demo` runs the hour that just ended through dag.test(): the run it records in Airflow's metadata
    (which `make airflow` shows) starts when it really started, not at its logical date (apache/airflow#66127)."""
    import importlib.util

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    spec = importlib.util.spec_from_file_location("fitness_demo", REPO / "devtools" / "scripts" / "demo.py")
    assert spec and spec.loader
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)

    started = dt.datetime.now(dt.UTC)
    run_id = demo.run_dag(lookback_hours=24)
    finished = dt.datetime.now(dt.UTC)
    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == "fitness_sync", DagRun.run_id == run_id))
        assert run is not None
        start_date, end_date, logical_date = run.start_date, run.end_date, run.logical_date
    assert logical_date == this_hour() or logical_date == this_hour() - dt.timedelta(hours=1)  # hour turned
    assert started <= start_date <= started + dt.timedelta(seconds=10), (started, start_date)
    assert start_date < end_date <= finished
    assert end_date - start_date <= finished - started

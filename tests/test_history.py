"""History and reconciliation through real dag.test() runs: late uploads, deletions and their
guard, the daily full reconciliation, history imports, source selection, an interrupted import."""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from tests.helpers import query
from tests.test_dag import emulator_activity_ids, run_dag, this_hour

pytestmark = pytest.mark.usefixtures("airflow_db")

DAY = dt.timedelta(days=1)


def succeeded(dag_run: Any) -> bool:
    return "success" in str(dag_run.state).lower()


def task_states(dag_run: Any) -> dict[str, str]:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id="fitness_sync", run_id=dag_run.run_id).one()
        return {ti.task_id: str(ti.state).split(".")[-1].lower() for ti in run.get_task_instances(session=session)}


def test_late_upload_is_loaded_by_the_next_hourly_run(db_conn: Any, all_connections: Any) -> None:
    emulator = all_connections
    hour = this_hour()
    assert succeeded(run_dag(hour - dt.timedelta(hours=1)))
    start = (hour - 2 * DAY).replace(minute=17)
    late = emulator.state.strava.add_activity(start.strftime("%Y-%m-%dT%H:%M:%SZ"), name="Uploaded two days late")
    assert query(db_conn, "SELECT count(*) FROM strava_activity WHERE id = %s", (late["id"],)) == [(0,)]
    assert succeeded(run_dag(hour))  # the next hourly run, default 72 h lookback
    assert query(db_conn, "SELECT name FROM strava_activity WHERE id = %s", (late["id"],)) == [
        ("Uploaded two days late",)]


def test_deleted_upstream_is_marked_not_erased(db_conn: Any, all_connections: Any) -> None:
    emulator = all_connections
    hour = this_hour()
    assert succeeded(run_dag(hour, lookback_hours=24 * 14))
    gone = emulator_activity_ids(emulator, hour - 7 * DAY, hour)[0]
    requests.delete(f"{emulator.url}/_emulator/strava/activities/{gone}", timeout=5).raise_for_status()
    (weight_name,), = query(db_conn, "SELECT data_point_name FROM fitbit_weight ORDER BY measured_at DESC LIMIT 1")
    weight_id = weight_name.rsplit("/", 1)[1]
    requests.delete(f"{emulator.url}/_emulator/google/dataPoints/weight/{weight_id}", timeout=5).raise_for_status()

    assert succeeded(run_dag(hour, lookback_hours=24 * 14))
    assert query(db_conn, "SELECT count(*) FROM strava_activity WHERE deleted_at IS NOT NULL") == [(1,)]
    assert query(db_conn, "SELECT id FROM strava_activity WHERE deleted_at IS NOT NULL") == [(gone,)]
    assert query(db_conn, "SELECT id::text FROM fitbit_weight WHERE deleted_at IS NOT NULL") == [(weight_id,)]
    deleted = dict(query(db_conn, "SELECT source, deleted FROM sync_run WHERE deleted > 0"))
    assert deleted == {"strava_activity": 1, "fitbit_weight": 1}
    # a third run changes nothing: the deleted rows stay marked, nothing else moves
    before = query(db_conn, "SELECT id, xmin::text FROM strava_activity ORDER BY id")
    assert succeeded(run_dag(hour, lookback_hours=24 * 14))
    assert query(db_conn, "SELECT id, xmin::text FROM strava_activity ORDER BY id") == before


def test_mass_deletion_is_refused_and_the_other_sources_still_load(db_conn: Any, all_connections: Any) -> None:
    emulator = all_connections
    hour = this_hour()
    assert succeeded(run_dag(hour, lookback_hours=24 * 14))
    ids = emulator_activity_ids(emulator, hour - 14 * DAY - dt.timedelta(hours=1), hour)
    assert len(ids) > 4
    for activity_id in ids[1:]:  # the API suddenly returns almost nothing for the window
        emulator.state.strava.activities.delete(activity_id)

    dag_run = run_dag(hour, lookback_hours=24 * 14)
    states = task_states(dag_run)
    assert not succeeded(dag_run)
    assert states["strava_activity.load"] == "failed"
    assert states["fitbit_weight.load"] == states["fitbit_calories.load"] == "success"
    assert query(db_conn, "SELECT count(*) FROM strava_activity WHERE deleted_at IS NOT NULL") == [(0,)]
    # the refused load rolled back: its batch is still in raw_record and staging
    assert query(db_conn, "SELECT count(*) > 0 FROM raw_record WHERE batch_id = %s",
                 (f"{dag_run.run_id}/strava_activity",)) == [(True,)]

    # the athlete really deleted them: allow it for one run
    assert succeeded(run_dag(hour, lookback_hours=24 * 14, max_deleted_share=1.0))
    assert query(db_conn, "SELECT count(*) FROM strava_activity WHERE deleted_at IS NOT NULL") == [(len(ids) - 1,)]
    # the failed run's batch is finished: the successful one removed what it left behind
    leftovers = [query(db_conn, f"SELECT count(*) FROM {table}")[0][0]
                 for table in ("raw_record", "extract_cursor", "stage_strava_activity", "stage_fitbit_weight",
                               "stage_fitbit_height", "stage_fitbit_calories")]
    assert leftovers == [0] * 6


def test_daily_run_reconciles_the_whole_history(db_conn: Any, all_connections: Any) -> None:
    emulator = all_connections
    midnight = this_hour().replace(hour=0)
    assert succeeded(run_dag(midnight, lookback_hours=24 * 400))  # everything the 1-year athlete has
    old = emulator_activity_ids(emulator, midnight - 300 * DAY, midnight - 200 * DAY)[0]
    emulator.state.strava.activities.delete(old)

    assert succeeded(run_dag(midnight - dt.timedelta(hours=5)))  # an ordinary hour: 72 h lookback
    assert query(db_conn, "SELECT count(*) FROM strava_activity WHERE deleted_at IS NOT NULL") == [(0,)]
    assert succeeded(run_dag(midnight, daily_full_reconcile=True))  # the run ending at 00:00 UTC
    assert query(db_conn, "SELECT id FROM strava_activity WHERE deleted_at IS NOT NULL") == [(old,)]
    (window_start,), = query(db_conn, "SELECT min(window_start) FROM sync_run WHERE source = 'strava_activity' "
                                      "AND window_end = %s AND deleted = 1", (midnight,))
    assert window_start.year == 2008


def test_history_import_of_a_range(db_conn: Any, all_connections: Any) -> None:
    emulator = all_connections
    hour = this_hour()
    start, end = hour.replace(hour=0) - 120 * DAY, hour.replace(hour=0) - 30 * DAY
    dag_run = run_dag(hour, history_start=start.date().isoformat(), history_end=end.date().isoformat())
    assert succeeded(dag_run)
    expected = emulator_activity_ids(emulator, start, end)
    assert sorted(r[0] for r in query(db_conn, "SELECT id FROM strava_activity")) == sorted(expected)
    (first, last), = query(db_conn, "SELECT min(measured_at), max(measured_at) FROM fitbit_weight")
    assert start <= first and last < end
    # Strava: one list call per 200 activities plus the final empty page
    assert emulator.stats()["requests"]["GET /api/v3/athlete/activities"] == math.ceil(len(expected) / 200) + 1


def test_sources_param_selects_branches(db_conn: Any, all_connections: Any) -> None:
    dag_run = run_dag(this_hour(), sources=["fitbit_calories"])
    assert succeeded(dag_run)
    states = task_states(dag_run)
    assert states["strava_activity.extract"] == "skipped" and states["fitbit_weight.load"] == "skipped"
    assert states["fitbit_calories.load"] == "success"
    assert query(db_conn, "SELECT source FROM sync_run") == [("fitbit_calories",)]


EXTRACT_IN_A_PROCESS = """
import datetime as dt, sys
from fitness_pipeline.tasks.extract import extract
from fitness_pipeline.windows import Window
extract("strava_activity", "import",
        Window(dt.datetime.fromisoformat(sys.argv[1]), dt.datetime.fromisoformat(sys.argv[2])))
"""


@pytest.mark.parametrize("next_run", ["the same run's next try", "a new run of the same import"])
def test_killed_import_resumes_without_duplicates_or_losses(schema: Any, all_connections: Any, next_run: str) -> None:
    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.tasks.load import load
    from fitness_pipeline.tasks.transform import transform
    from fitness_pipeline.windows import Window

    db_conn = schema
    emulator = all_connections
    hour = this_hour()
    start = hour - 360 * DAY
    requests.post(f"{emulator.url}/_emulator/faults", json={"slow_next": 3, "slow_seconds": 1.0},
                  timeout=5).raise_for_status()
    child = subprocess.Popen([sys.executable, "-c", EXTRACT_IN_A_PROCESS, start.isoformat(), hour.isoformat()],
                             env=os.environ.copy())
    deadline = time.monotonic() + 60
    while emulator.stats()["requests"].get("GET /api/v3/athlete/activities", 0) < 2:  # halfway through paging
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.05)
    child.kill()  # SIGKILL: no cleanup, like an OOM kill or a lost worker
    child.wait()
    (landed,), = query(db_conn, "SELECT count(*) FROM raw_record")
    assert landed > 0 and query(db_conn, "SELECT landed FROM extract_cursor") == [(landed,)]
    listed_before = emulator.stats()["requests"]["GET /api/v3/athlete/activities"]

    # the task's next try (same batch), or a new run of the same import (a new batch), continues after what
    # was landed, then transform and load
    run_id = "import" if next_run.startswith("the same") else "import-again"
    extracted = extract("strava_activity", run_id, Window(start, hour))
    loaded = load(transform(extracted))
    ids = [r[0] for r in query(db_conn, "SELECT id FROM strava_activity")]
    expected = emulator_activity_ids(emulator, start, hour)
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(expected)
    assert loaded.inserted == len(expected)
    assert extracted.extracted - landed < len(expected)  # the resumed try did not start over
    listed_after = emulator.stats()["requests"]["GET /api/v3/athlete/activities"] - listed_before
    assert listed_after <= math.ceil((len(expected) - landed) / 200) + 2  # the rest, the empty page, the seam
    # nothing left behind: the killed batch's pages became this batch's and were loaded
    assert query(db_conn, "SELECT count(*) FROM extract_cursor") == [(0,)]
    assert query(db_conn, "SELECT count(*) FROM raw_record") == [(0,)]


def reschedules(dag_run: Any, task_id: str) -> int:
    """How often ``task_id`` of ``dag_run`` was rescheduled (Airflow 3's task_reschedule rows)."""
    from airflow.models import DagRun, TaskInstance
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    with create_session() as session:
        return (session.query(TaskReschedule).join(TaskInstance, TaskInstance.id == TaskReschedule.ti_id)
                .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id))
                .filter(DagRun.run_id == dag_run.run_id, TaskInstance.task_id == task_id).count())


def test_long_rate_limit_wait_reschedules_and_the_next_try_resumes(db_conn: Any, make_emulator: Any,
                                                                   connect_strava: Any) -> None:
    # one read per 4-second window, and the hook may not wait at all: every full window reschedules. The
    # listing needs at least three reads (two pages and the empty one) within a second or so: they cannot
    # all fall into different windows, whatever the clock (with two a window and 251 activities they could)
    emulator = connect_strava(make_emulator(read_limit=(1, 1000), rate_window_seconds=4),
                              rate_limit_window_seconds=4, max_rate_limit_wait=0)
    hour = this_hour()
    start = hour.replace(hour=0) - 360 * DAY
    # "strava", the source's former name, still selects it
    dag_run = run_dag(hour, history_start=start.date().isoformat(), sources=["strava"])
    assert succeeded(dag_run)
    expected = emulator_activity_ids(emulator, start, hour)
    loaded = [r[0] for r in query(db_conn, "SELECT id FROM strava_activity")]
    assert len(loaded) == len(set(loaded)) and sorted(loaded) == sorted(expected)
    assert len(expected) > 200  # more than one page, so the import really stopped halfway
    assert reschedules(dag_run, "strava_activity.extract") >= 1
    listed = emulator.stats()["requests"]["GET /api/v3/athlete/activities"]
    # every page once, the final empty page, and per resumed try one request at the seam at most
    pages = math.ceil(len(expected) / 200) + 1
    assert pages <= listed <= pages + 2 * reschedules(dag_run, "strava_activity.extract")
    assert query(db_conn, "SELECT count(*) FROM extract_cursor") == [(0,)]


def test_backfill_beyond_the_rate_limit_has_no_failed_run(db_conn: Any, make_emulator: Any,
                                                          connect_strava: Any) -> None:
    # 3 reads per 3-second window; five hourly runs need 10: each request waits for room in the shared budget
    emulator = connect_strava(make_emulator(read_limit=(3, 1000), rate_window_seconds=3),
                              rate_limit_window_seconds=3, read_rate_limits="3,1000")
    hour = this_hour()
    started = time.monotonic()
    for back in range(5, 0, -1):
        assert succeeded(run_dag(hour - back * dt.timedelta(hours=1), sources=["strava_activity"]))
    assert time.monotonic() - started > 6  # ten reads in windows of three: it did wait
    stats = emulator.stats()
    assert stats["requests"]["GET /api/v3/athlete/activities"] == 10
    assert stats["rate_limited"] == 0  # a new task finds the window full in the budget, not by a 429


def test_errors_a_person_must_fix_fail_without_retries(schema: Any, all_connections: Any) -> None:
    """A revoked authorization or a refused mass deletion: retrying cannot help, so the task fails
    at once (AirflowFailException) instead of burning its retries."""
    from fitness_pipeline.compat import AirflowFailException
    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.tasks.load import load
    from fitness_pipeline.tasks.transform import transform
    from fitness_pipeline.windows import Window

    emulator = all_connections
    hour = this_hour()
    window = Window(hour - 14 * DAY, hour)
    load(transform(extract("strava_activity", "first", window)))
    for activity_id in emulator_activity_ids(emulator, window.start, hour):
        emulator.state.strava.activities.delete(activity_id)
    with pytest.raises(AirflowFailException, match="max_deleted_share"):
        load(transform(extract("strava_activity", "second", window)))

    requests.post(f"{emulator.url}/_emulator/strava/revoke", timeout=5).raise_for_status()
    with pytest.raises(AirflowFailException, match="Authorize the app again"):
        extract("strava_activity", "third", Window(hour - DAY, hour))

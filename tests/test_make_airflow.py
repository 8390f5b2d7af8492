"""`make airflow`: the local Airflow starts, lists fitness_sync and fitness_events without import errors, runs a
triggered run to success through the REST API; an upload, a rename and a deletion made in the emulator reach the
training page within a minute each through the webhook receiver and fitness_events (no poll); and it stops
everything it started."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from fitness_devtools.airflow_components import free_port

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_make_airflow_runs_fitness_sync_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    ready = tmp_path / "ready"
    log = (tmp_path / "airflow_local.log").open("w")
    script = subprocess.Popen(
        [sys.executable, str(REPO / "devtools" / "scripts" / "airflow_local.py"), "--port", str(port),
         "--ready-file", str(ready), "--home", str(tmp_path / "local")],
        env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            assert script.poll() is None, (tmp_path / "airflow_local.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "make airflow did not come up in 4 minutes"
            time.sleep(1)
        started = {p.pid for p in psutil.Process(script.pid).children(recursive=True)}
        api, emulator = ready.read_text().split()

        for dag_id in ("fitness_sync", "fitness_events"):
            assert requests.get(f"{api}/api/v2/dags/{dag_id}", timeout=10).json()["is_paused"] is False
        errors = requests.get(f"{api}/api/v2/importErrors", timeout=10).json()
        assert errors["total_entries"] == 0, errors

        conf = {"lookback_hours": 24, "daily_full_reconcile": False}
        triggered = dt.datetime.now(dt.UTC)
        run = requests.post(f"{api}/api/v2/dags/fitness_sync/dagRuns", timeout=10,
                            json={"logical_date": None, "conf": conf}).json()
        state, recorded = run["state"], run
        deadline = time.monotonic() + 240
        while state not in ("success", "failed"):
            assert time.monotonic() < deadline, f"run still {state} after 4 minutes"
            time.sleep(2)
            recorded = requests.get(f"{api}/api/v2/dags/fitness_sync/dagRuns/{run['dag_run_id']}",
                                    timeout=10).json()
            state = recorded["state"]
        assert state == "success"
        # the UI's duration: the scheduler records the real start and end
        start, end = (dt.datetime.fromisoformat(recorded[key]) for key in ("start_date", "end_date"))
        assert triggered - dt.timedelta(seconds=1) <= start <= end <= dt.datetime.now(dt.UTC)
        assert run["data_interval_start"] is None  # an Airflow 3 manual run without a logical date
        # the training page it prints, with the data that run loaded (make airflow: everyone is admin)
        assert requests.get(f"{api}/training/", timeout=10).status_code == 200
        calendar = requests.get(f"{api}/training/api/calendar", timeout=10).json()
        assert calendar["empty"] is False and len(calendar["weeks"]) >= 4

        # event-driven: each change in the emulator is on the training page within a minute, with no poll
        start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(microsecond=0)
        upload = requests.post(f"{emulator}/_emulator/strava/activities", timeout=10, json={
            "start_date": start.isoformat(), "name": "Webhook Run", "sport_type": "Run", "distance": 6000.0,
            "moving_time": 1900, "elapsed_time": 1950}).json()
        chip = within_a_minute(api, upload["id"], lambda chip: chip is not None and chip["name"] == "Webhook Run")
        assert chip["lap_count"] == 6 and chip["kcal_burned"] > 0  # the detail came with the event
        requests.put(f"{emulator}/_emulator/strava/activities/{upload['id']}", json={"name": "Renamed Run"},
                     timeout=10).raise_for_status()
        within_a_minute(api, upload["id"], lambda chip: chip is not None and chip["name"] == "Renamed Run")
        requests.delete(f"{emulator}/_emulator/strava/activities/{upload['id']}", timeout=10).raise_for_status()
        within_a_minute(api, upload["id"], lambda chip: chip is None)
        runs = requests.get(f"{api}/api/v2/dags/fitness_events/dagRuns", timeout=10).json()["dag_runs"]
        assert any(r["run_type"] == "asset_triggered" and r["state"] == "success" for r in runs), runs
    finally:
        if script.poll() is None:
            script.send_signal(signal.SIGTERM)
        try:
            script.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(script.pid, signal.SIGKILL)
            raise
        log.close()
    leftovers = [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert leftovers == [], f"processes left running: {leftovers}"
    assert script.returncode == 0, (tmp_path / "airflow_local.log").read_text()[-3000:]


def within_a_minute(api: str, activity_id: int, shown: Any) -> Any:
    """The activity's chip on the training page (None: not shown) once ``shown(chip)`` holds; fails after 60 s."""
    started = time.monotonic()
    while True:
        around = (dt.date.today() - dt.timedelta(days=3)).isoformat()  # the upload's local day, in any zone
        calendar = requests.get(f"{api}/training/api/calendar", params={"start": around, "weeks": 2}, timeout=10).json()
        chips = [a for w in calendar["weeks"] for d in w["days"] for a in d["activities"] if a["id"] == activity_id]
        chip = chips[0] if chips else None
        if shown(chip):
            print(f"activity {activity_id}: on the training page after {time.monotonic() - started:.1f} s")
            return chip
        assert time.monotonic() - started < 60, f"activity {activity_id} not as expected after a minute: {chip}"
        time.sleep(1)

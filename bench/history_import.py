"""A history import, measured: API calls per endpoint, wall time and peak memory.

Two athletes, each served by the emulator running as its own process (so its memory is not
counted): the demo athlete's five years (Strava, Fitbit weight, Fitbit calories), and a
Strava athlete with 100,000 activities. The import is what the DAG's tasks do for a run
with ``history_start`` (extract streams page by page into ``raw_record``, transform works in
chunks, load is one set-based statement), run in a child process whose peak RSS is reported.

The emulator's rate limits are lifted for the 100,000-activity athlete (501 list calls would
otherwise take 75 minutes of Strava's 15-minute windows); the calls counted are the same.

Targets (issue "History"): Strava list calls = ceil(activities / 200) + 1; peak RSS at most
300 MB for 100,000 activities.

    PYTHONPATH=plugins:devtools .venv/bin/python bench/history_import.py [--activities 100000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "devtools")]

from fitness_devtools.embedded_stack import airflow_env, emulator_connection_env, start_postgres  # noqa: E402

HISTORY_START = "2008-01-01"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--activities", type=int, default=100_000)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # internal: run an import
    args = parser.parse_args()
    if args.child:
        print(json.dumps(import_history(args.child)))
        return

    work = Path(tempfile.mkdtemp(prefix="bench-history-"))
    env = {**os.environ, **airflow_env(work / "airflow"), "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}
    postgres = start_postgres(work / "pgdata", keep=False)
    try:
        print(f"{'athlete':<26}{'source':<18}{'rows':>8}{'API calls':>11}  {'calls by endpoint':<58}"
              f"{'wall s':>8}{'peak RSS MB':>13}")
        scenario(postgres, env, "demo athlete, 5 years", ["--years", "5", "--google-years", "5"],
                 ["strava_activity", "fitbit_weight", "fitbit_calories"])
        scenario(postgres, env, f"{args.activities:,} activities",
                 ["--activities", str(args.activities), "--read-limit", "1000000,10000000",
                  "--overall-limit", "1000000,10000000"], ["strava_activity"])
    finally:
        postgres.stop()


def scenario(postgres: Any, env: dict[str, str], label: str, emulator_args: list[str], sources: list[str]) -> None:
    database = f"history_{abs(hash(label)) % 10**8}"
    postgres.create_database(database)
    emulator = subprocess.Popen([sys.executable, "-m", "fitness_emulator", "--port", "0", *emulator_args],
                                env=env, stdout=subprocess.PIPE, text=True)
    try:
        ready = (emulator.stdout.readline() if emulator.stdout else "").split()
        if ready[:1] != ["READY"]:
            raise SystemExit("the emulator did not start")
        url = ready[1]
        child_env = {**env, "AIRFLOW_CONN_FITNESS_DB": postgres.connection_env(database),
                     "AIRFLOW_CONN_STRAVA_DEFAULT": emulator_connection_env(url),
                     "AIRFLOW_CONN_FITBIT_DEFAULT": emulator_connection_env(url, "fitbit")}
        for source in sources:
            import requests

            requests.delete(f"{url}/_emulator/stats", timeout=10)
            out = subprocess.run([sys.executable, __file__, "--child", source], env=child_env, check=True,
                                 capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            calls = {k: v for k, v in requests.get(f"{url}/_emulator/stats", timeout=10).json()["requests"].items()
                     if v and "token" not in k}
            by_endpoint = ", ".join(f"{k.split(' ', 1)[1].rsplit('/', 1)[-1]} {v}" for k, v in calls.items())
            print(f"{label:<26}{source:<18}{result['rows']:>8}{sum(calls.values()):>11}  {by_endpoint:<58}"
                  f"{result['seconds']:>8.1f}{result['peak_rss_mb']:>13.0f}")
            if source == "strava_activity":
                listed = calls.get("GET /api/v3/athlete/activities", 0)
                target = math.ceil(result["extracted"] / 200) + 1
                print(f"{'':<26}Strava list calls {listed} for {result['extracted']} activities; "
                      f"target ceil(n/200)+1 = {target}")
    finally:
        emulator.terminate()
        emulator.wait(10)


def import_history(args: list[str]) -> dict[str, Any]:
    """In the child: one history import of ``source``, as the DAG's three tasks run it."""
    from fitness_pipeline import sources
    from fitness_pipeline.handover import RunParams
    from fitness_pipeline.tasks import extract, load, plan, prepare, transform

    spec = sources.get(args[0])
    started = time.perf_counter()
    prepare.ensure_schema()
    window = plan.window_for_run(spec, RunParams(history_start=HISTORY_START), None, None, _Run())
    extracted = extract.extract(spec.id, "history", window)
    loaded = load.load(transform.transform(extracted))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
    return {"rows": loaded.inserted + loaded.updated + loaded.unchanged, "extracted": extracted.extracted,
            "seconds": time.perf_counter() - started, "peak_rss_mb": peak_kb / 1024}


class _Run:
    """Stands in for the DagRun of a manual trigger: only run_after is read."""

    import datetime as _dt

    run_after = _dt.datetime.now(_dt.UTC)


if __name__ == "__main__":
    main()

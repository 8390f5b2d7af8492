"""`make test-airflow2`: the same DAG and hooks on Airflow 2.11 (SQLAlchemy 1.4, psycopg2).

Run from the MAIN virtualenv (it has pgserver, psycopg 3 and the emulator's FastAPI):

    .venv/bin/python devtools/scripts/airflow2_check.py --airflow2-python .venv-airflow2/bin/python

It starts an embedded PostgreSQL and the API emulator (Strava and Google sides) in this
process, then drives the Airflow 2 virtualenv in subprocesses against a throw-away
AIRFLOW_HOME: ``airflow db migrate``, ``airflow pools import``, a DagBag parse check (no
import errors, no warnings from our files) and ``airflow dags backfill -s ... -e ...
fitness_sync`` over three hourly runs; then it checks the runs and the rows.

Executor: LocalExecutor by default, with Airflow's metadata in the embedded PostgreSQL (like a
real 2.x deployment: one process per task, a run's branches in parallel, pools enforced).
``--executor SequentialExecutor`` is 2.11's out-of-the-box SQLite setup: same checks, but its
backfill takes ~110 s instead of ~22 s (30 task instances, one `airflow tasks run` at a time).

The last line is ``airflow2: N passed, M failed``; the exit status is non-zero when anything
failed (the temporary AIRFLOW_HOME with every log is then kept and its path printed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "devtools")]

from fitness_devtools.embedded_stack import airflow_env, emulator_connection_env, start_postgres  # noqa: E402

DAG_ID = "fitness_sync"
DATABASE = "fitness"
RUNS = 3
LOOKBACK = dt.timedelta(hours=72)  # the DAG's default lookback_hours
SOURCES = ("strava_activity", "fitbit_weight", "fitbit_calories")
EXECUTORS = ("SequentialExecutor", "LocalExecutor", "DebugExecutor")
CONF = {"daily_full_reconcile": False}  # windows must not depend on the hour (they avoid 00:00 as well)

# A cluster policy for this throw-away Airflow only: a failing task fails the backfill at once instead of
# after the DAG's 3 retries with backoff (2.11's `backfill --disable-retry` does not stop them).
LOCAL_SETTINGS = """
def task_policy(task):
    task.retries = 0
"""

# Runs inside the Airflow 2 interpreter: parse dags/ and report import errors and our own warnings.
PARSE_CHECK = """
import json, sys, warnings
import airflow.models  # Airflow's own import-time warnings are not ours
from airflow.models import DagBag
repo, dags = sys.argv[1], sys.argv[2]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    bag = DagBag(dag_folder=dags, include_examples=False)
ours = [f"{w.filename}:{w.lineno} {w.category.__name__}: {w.message}" for w in caught
        if str(w.filename).startswith(repo) and "/.venv" not in str(w.filename)]
dag = bag.get_dag("fitness_sync")
bag.sync_to_db()  # what `airflow dags reserialize` does: `dags list-runs` needs the DAG in the dag table
print(json.dumps({"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "warnings": ours,
                  "dag_ids": sorted(bag.dag_ids), "tasks": len(dag.tasks) if dag else 0,
                  "timetable": type(dag.timetable).__name__ if dag else None}))
"""

VERSIONS = """
import json
from importlib.metadata import version
print(json.dumps({name: version(name) for name in (
    "apache-airflow", "apache-airflow-providers-postgres", "sqlalchemy", "psycopg2-binary", "pendulum")}))
"""


class Checks:
    """Counts named checks; prints one line each."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {name}" + (f" ({detail})" if detail else ""), flush=True)
        else:
            self.failed.append(name)
            print(f"  FAIL  {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok


class StepFailed(Exception):
    """A step the later checks depend on failed (already counted)."""


def pick_intervals(emulator: Any, now: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """RUNS consecutive hourly data intervals, the last ending at least an hour ago, none ending at
    00:00 UTC (that run would reconcile the whole history), and whose windows together hold at least
    one Strava activity and one weighing (the emulated athlete rests some days: step back until so)."""
    end = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    activities = [dt.datetime.fromisoformat(a["start_date"]) for a in emulator.state.strava.find_activities(bool)]
    weighings = [dt.datetime.fromtimestamp(p.time, dt.UTC) for p in emulator.state.google.store.iter_listed("weight")]
    for _ in range(24 * 14):
        intervals = [(end - dt.timedelta(hours=RUNS - i), end - dt.timedelta(hours=RUNS - i - 1)) for i in range(RUNS)]
        start = intervals[0][0] - LOOKBACK
        if (all(e.hour != 0 for _, e in intervals) and any(start < t < end for t in activities)
                and any(start <= t < end for t in weighings)):
            return intervals
        end -= dt.timedelta(hours=1)
    raise RuntimeError("the emulator has no activity and weighing within 72 h of any hour in the last two weeks")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--airflow2-python", default=str(REPO / ".venv-airflow2" / "bin" / "python"),
                        help="the Airflow 2 virtualenv's python (default: .venv-airflow2/bin/python)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary AIRFLOW_HOME and logs")
    parser.add_argument("--executor", choices=EXECUTORS, default="LocalExecutor",
                        help="LocalExecutor (default; metadata in the embedded PostgreSQL, a run's tasks in "
                             "parallel), SequentialExecutor (SQLite, one task at a time) or DebugExecutor "
                             "(every task inside the backfill process; fastest)")
    args = parser.parse_args()

    checks = Checks()
    started = time.monotonic()
    timings: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="fitness-airflow2-"))
    python = Path(os.path.abspath(args.airflow2_python))  # not resolve(): the venv's python is a symlink
    try:
        if not checks.check("airflow 2 python exists", python.exists(), str(python)):
            raise StepFailed
        run(checks, timings, tmp, python, args.executor)
    except StepFailed:
        pass
    except Exception as exc:  # an unexpected error is a failed check too, with its message
        checks.check("no unexpected error", False, f"{type(exc).__name__}: {exc}")
    finally:
        if args.keep or checks.failed:
            print(f"Temporary files (AIRFLOW_HOME, logs): {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.monotonic() - started
    print("Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + f"; total {total:.1f} s")
    if checks.failed:
        print("Failed: " + "; ".join(checks.failed))
    print(f"airflow2: {checks.passed} passed, {len(checks.failed)} failed")
    return 1 if checks.failed else 0


def run(checks: Checks, timings: dict[str, float], tmp: Path, python: Path, executor: str) -> None:
    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        try:
            return fn()
        finally:
            timings[name] = time.monotonic() - t0

    base_env = {**os.environ, **airflow_env(tmp / "airflow")}
    versions = json.loads(airflow2(python, ["-c", VERSIONS], base_env, tmp, "versions").stdout.strip().splitlines()[-1])
    print("Airflow 2 virtualenv: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    checks.check("airflow is 2.x with SQLAlchemy 1.4",
                 versions["apache-airflow"].startswith("2.") and versions["sqlalchemy"].startswith("1.4."))

    postgres = timed("postgres", lambda: start_postgres(tmp / "pgdata", keep=False))
    try:
        postgres.create_database(DATABASE)
        from fitness_emulator import EmulatorSettings, GoogleSettings, StravaSettings, start_emulator

        settings = EmulatorSettings(strava=StravaSettings(years=1), google=GoogleSettings(years=1))
        with timed("emulator", lambda: start_emulator(settings)) as emulator:
            env = environment(tmp, python, postgres.connection_env(DATABASE), emulator.url)
            env["AIRFLOW__CORE__EXECUTOR"] = executor  # airflow_env's SQLite suits the other two
            if executor == "LocalExecutor":  # it refuses SQLite: Airflow's metadata goes to the same server
                postgres.create_database("airflow")
                env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = (
                    f"postgresql+psycopg2://postgres@/airflow?host={postgres.socket_dir}&port={postgres.port}")
            print(f"PostgreSQL: {postgres.socket_dir}; emulator: {emulator.url}; AIRFLOW_HOME: {env['AIRFLOW_HOME']}")
            exercise(checks, timings, timed, tmp, python, env, postgres, emulator)
    finally:
        postgres.stop()


def environment(tmp: Path, python: Path, fitness_db: str, emulator_url: str) -> dict[str, str]:
    """The Airflow 2 subprocesses' environment: self-contained Airflow, connections to the stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "VIRTUAL_ENV"}
    env.update(airflow_env(tmp / "airflow"))
    config = tmp / "airflow" / "config"  # on sys.path of every Airflow process
    config.mkdir(parents=True, exist_ok=True)
    (config / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
    env.update({
        "AIRFLOW__SCHEDULER__SCHEDULE_AFTER_TASK_EXECUTION": "False",  # the backfill schedules; saves ~1 s a task
        "AIRFLOW__CORE__DAG_DISCOVERY_SAFE_MODE": "True",
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__METRICS__TIMER_UNIT_CONSISTENCY": "True",  # silences a RemovedInAirflow3Warning per command
        "AIRFLOW_CONN_FITNESS_DB": fitness_db,
        # fast retries: the emulator never needs the production backoff
        "AIRFLOW_CONN_STRAVA_DEFAULT": emulator_connection_env(emulator_url, backoff_factor=0.05),
        "AIRFLOW_CONN_FITBIT_DEFAULT": emulator_connection_env(emulator_url, "fitbit", backoff_factor=0.05),
        "PATH": os.pathsep.join([str(python.parent), env.get("PATH", "")]),
    })
    return env


def airflow2(python: Path, argv: list[str], env: dict[str, str], tmp: Path, name: str,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python argv`` (the Airflow 2 interpreter), its output kept in ``tmp/<name>.log``.
    Raises RuntimeError with the output's end when it fails or times out."""
    log = tmp / f"{name.replace(' ', '_')}.log"
    with log.open("w+") as out:
        process = subprocess.Popen([str(python), *argv], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=out,
                                   text=True)
        try:
            stdout, _ = process.communicate(timeout=timeout)
            failure = f"exited with {process.returncode}" if process.returncode else ""
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, _ = process.communicate()
            failure = f"timed out after {timeout:.0f} s"
        out.write(f"\n--- stdout\n{stdout}")
        out.seek(0)
        output = out.read()
    if failure:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise RuntimeError(f"`{' '.join(argv[:5])} ...` {failure} (log: {log}):\n{tail}")
    return subprocess.CompletedProcess(argv, process.returncode, stdout, "")


def exercise(checks: Checks, timings: dict[str, float], timed: Callable[..., Any], tmp: Path, python: Path,
             env: dict[str, str], postgres: Any, emulator: Any) -> None:
    def step(name: str, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str] | None:
        try:
            result = timed(name, lambda: airflow2(python, argv, env, tmp, name, timeout))
        except RuntimeError as exc:
            checks.check(name, False, str(exc))
            return None
        checks.check(name, True, f"{timings[name]:.1f} s")
        return result

    if not step("airflow db migrate", ["-m", "airflow", "db", "migrate"]):
        raise StepFailed
    if not step("airflow pools import", ["-m", "airflow", "pools", "import", str(REPO / "include" / "pools.json")]):
        raise StepFailed

    parsed = step("DagBag parse", ["-c", PARSE_CHECK, str(REPO), str(REPO / "dags")])
    if not parsed:
        raise StepFailed
    report = json.loads(parsed.stdout.strip().splitlines()[-1])
    checks.check("dags/ parses without import errors", not report["import_errors"], json.dumps(report["import_errors"]))
    checks.check("no DeprecationWarning/FutureWarning from our files", not report["warnings"],
                 "\n    ".join(["", *report["warnings"]]))
    checks.check("fitness_sync has 11 tasks (ensure_schema, 3 per source, Strava's enrich; not mapped over athletes "
                 "on 2.x) on CronDataIntervalTimetable",
                 DAG_ID in report["dag_ids"] and report["tasks"] == 11
                 and report["timetable"] == "CronDataIntervalTimetable", json.dumps(report))

    # logical dates first..last; on 2.11 each hourly run's data interval is [logical date, +1 h)
    intervals = pick_intervals(emulator, dt.datetime.now(dt.UTC))
    first, last = intervals[0][0], intervals[-1][0]
    print(f"Backfill: -s {first.isoformat()} -e {last.isoformat()} (data intervals "
          + ", ".join(f"{s:%H:%M}-{e:%H:%M}" for s, e in intervals) + " UTC)")
    backfill = step("airflow dags backfill", [
        "-m", "airflow", "dags", "backfill", "-s", first.isoformat(), "-e", last.isoformat(),
        "--conf", json.dumps(CONF), "--donot-pickle", DAG_ID], timeout=600)
    if not backfill:
        print_failed_task_logs(env)
    ours = our_warnings_in_task_logs(env)
    checks.check("no warnings from our files in the task logs", not ours, "\n    ".join(["", *ours[:10]]))
    updates = schema_updates_in_task_logs(env)
    # SQLAlchemy 1.4 compiles the views to other text than 2.x: the server's rendering is what is compared
    checks.check("ensure_schema (SQLAlchemy 1.4) changed the schema in the first run only, views included",
                 len(updates) == 1 and "training_week: created" in updates[0], f"{len(updates)} 'Schema updated' lines")

    listed = step("airflow dags list-runs", ["-m", "airflow", "dags", "list-runs", "-d", DAG_ID, "-o", "json"])
    # stdout also carries log lines ("[2026-...] {...} INFO - ..."): the JSON is the line that parses as a list
    runs = next((json.loads(line) for line in (listed.stdout if listed else "").splitlines()
                 if line.startswith("[{") or line == "[]"), [])
    states = sorted((r["execution_date"], r["state"]) for r in runs)
    expected_dates = [s for s, _ in intervals]
    checks.check(f"{RUNS} successful dag runs at the expected logical dates",
                 [(dt.datetime.fromisoformat(d), s) for d, s in states] == [(d, "success") for d in expected_dates],
                 json.dumps(states))
    check_rows(checks, postgres, emulator, intervals)


def print_failed_task_logs(env: dict[str, str]) -> None:
    """The end of every task log that mentions an error (the backfill itself only says 'failed')."""
    logs = Path(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"])
    for path in sorted(logs.rglob("*.log")):
        text = path.read_text(errors="replace")
        if "Traceback" in text or "ERROR" in text:
            print(f"--- {path.relative_to(logs)}")
            print("\n".join(text.splitlines()[-30:]))


def our_warnings_in_task_logs(env: dict[str, str]) -> list[str]:
    """Warnings raised at run time by dags/ or plugins/ (the parse check only sees import time)."""
    ours = (str(REPO / "dags"), str(REPO / "plugins"))
    return sorted({line.strip() for path in Path(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]).rglob("*.log")
                   for line in path.read_text(errors="replace").splitlines()
                   if "Warning" in line and any(root in line for root in ours)})


def schema_updates_in_task_logs(env: dict[str, str]) -> list[str]:
    """The "Schema updated: ..." lines ensure_schema logged, one per run that changed the schema."""
    return [line for path in sorted(Path(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]).rglob("*.log"))
            for line in path.read_text(errors="replace").splitlines() if "Schema updated:" in line]


def check_rows(checks: Checks, postgres: Any, emulator: Any, intervals: list[tuple[dt.datetime, dt.datetime]]) -> None:
    import psycopg

    # every run fetches its data interval widened by the lookback: together (first start - 72 h, last end)
    start, end = intervals[0][0] - LOOKBACK, intervals[-1][1]
    expected = sorted(a["id"] for a in emulator.state.strava.find_activities(
        lambda a: start < dt.datetime.fromisoformat(a["start_date"]) < end))
    with closing(psycopg.connect(postgres.dsn(DATABASE), autocommit=True)) as conn:
        def rows(sql: str) -> list[tuple[Any, ...]]:
            return conn.execute(sql).fetchall()

        per_source = dict(rows("SELECT source, count(*) FROM sync_run GROUP BY source"))
        checks.check(f"sync_run has {RUNS} rows per source", all(per_source.get(s) == RUNS for s in SOURCES),
                     json.dumps(per_source))
        strava = rows("SELECT window_start, window_end, inserted, updated, unchanged FROM sync_run "
                      "WHERE source = 'strava_activity' ORDER BY window_start")
        checks.check("strava windows are the data intervals widened by 72 h",
                     [(s, e) for s, e, *_ in strava] == [(s - LOOKBACK, e) for s, e in intervals],
                     ", ".join(f"[{s:%m-%d %H:%M}, {e:%m-%d %H:%M})" for s, e, *_ in strava))
        loaded = [r[0] for r in rows("SELECT id FROM strava_activity ORDER BY id")]
        checks.check("strava_activity rows are the emulator's activities in the windows",
                     bool(expected) and loaded == expected,
                     f"{len(loaded)} loaded, {len(expected)} expected; missing "
                     f"{sorted(set(expected) - set(loaded))[:5]}, extra {sorted(set(loaded) - set(expected))[:5]}")
        counts = [tuple(r[2:]) for r in strava]
        checks.check("overlapping windows: each activity inserted once, none rewritten (ON CONFLICT ... WHERE)",
                     sum(c[0] for c in counts) == len(expected) and all(c[1] == 0 for c in counts),
                     "(inserted, updated, unchanged) per run: " + json.dumps(counts))
        tables = {t: rows(f"SELECT count(*) FROM {t}")[0][0]
                  for t in ("fitbit_weight", "fitbit_calories", "quarantine", "raw_record", "oauth_token",
                            "strava_activity_detail", "strava_activity")}
        checks.check("fitbit_weight and fitbit_calories are not empty",
                     tables["fitbit_weight"] > 0 and tables["fitbit_calories"] > 0,
                     f"{tables['fitbit_weight']} weights, {tables['fitbit_calories']} calorie days")
        checks.check("quarantine is empty", tables["quarantine"] == 0, f"{tables['quarantine']} rows")
        checks.check("the enrich step read every activity's detail", tables["strava_activity_detail"]
                     == tables["strava_activity"] > 0, f"{tables['strava_activity_detail']} details of "
                     f"{tables['strava_activity']} activities")
        checks.check("raw_record is empty after the loads", tables["raw_record"] == 0, f"{tables['raw_record']} rows")
        checks.check("token store (psycopg2) holds both APIs' tokens", tables["oauth_token"] == 2,
                     f"{tables['oauth_token']} rows")
        weeks = rows("SELECT coalesce(sum(activities), 0) FROM training_week")[0][0]
        checks.check("the views (made under SQLAlchemy 1.4) count every activity", weeks == len(loaded),
                     f"training_week: {weeks} activities, {len(loaded)} rows")
    print(f"Rows: {len(loaded)} activities, {tables['fitbit_weight']} weights, {tables['fitbit_calories']} calorie "
          f"days; API requests: {sum(emulator.stats().get('requests', {}).values())}")


if __name__ == "__main__":
    sys.exit(main())

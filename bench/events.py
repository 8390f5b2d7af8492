"""Event-driven sync (issue 12): how fast an upload reaches PostgreSQL, what it costs, and what the receiver takes.

(a) **Latency**, on the embedded stack as `make airflow` runs it: Airflow 3 (API server, scheduler, DAG processor,
    triggerer; LocalExecutor), the emulator pushing Strava's events to the receiver (uvicorn, subscribed with the
    subscription command's functions), DAG ``fitness_events`` scheduled on its asset watcher; ``fitness_sync``
    stays paused (no poll). ``--uploads`` uploads in the emulator, one every ``--spacing`` seconds; for each, the
    seconds from the upload to its row in ``strava_activity`` (the database polled every 0.2 s).
(b) **Strava reads per simulated day**, one athlete, the task bodies in-process (no Airflow; the emulator's,
    the token store's and the budget's clocks simulated as in ``bench/club.py``): ``--changes`` changes in the
    day (uploads, renames, a deletion), spread over its hours. *Polling*: every hour the listing (72 h lookback,
    the midnight run the whole history) and the details of newly listed activities. *Webhooks*: the events
    applied as they come (one detail read per changed activity), the poll every 6 hours as the backstop
    (``strava_poll_every_hours=6``), the details it still finds missing. Both end with equal tables.
(c) **The receiver** alone (``uvicorn --factory fitness_pipeline.receiver:create_app``, its own process, one
    worker): ``--burst`` distinct valid events sent by ``--concurrency`` clients at once; requests per second,
    latency percentiles, and events lost (sent and answered 200 but not in ``webhook_event``).

The last line, for scripts::

    events: p95 upload-to-row <s> s, <x> calls per changed activity, receiver p99 <ms> ms, <n> lost

    PYTHONPATH=plugins:devtools .venv/bin/python bench/events.py [--uploads 20] [--burst 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / d) for d in ("plugins", "devtools")]

from fitness_devtools.embedded_stack import airflow_env, emulator_connection_env, start_postgres  # noqa: E402

LISTING = "GET /api/v3/athlete/activities"
DETAIL = "GET /api/v3/activities/{activity_id}"
HOUR = dt.timedelta(hours=1)


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=3.0, help="seconds between two uploads in (a)")
    parser.add_argument("--changes", type=int, default=10, help="changed activities in the simulated day of (b)")
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--skip", default="", help="parts to leave out, e.g. a or a,c")
    args = parser.parse_args()
    skip = set(args.skip.split(",")) - {""}
    work = Path(tempfile.mkdtemp(prefix="bench-events-"))
    os.environ.update(airflow_env(work / "airflow"))
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
    logging.disable(logging.WARNING)
    postgres = start_postgres(work / "pgdata", keep=False)
    p95 = per_change = p99 = lost = float("nan")
    try:
        if "c" not in skip:
            p99, lost = receiver_burst(postgres, args.burst, args.concurrency)
        if "b" not in skip:
            per_change = reads_per_day(postgres, args.changes)
        if "a" not in skip:
            p95 = upload_to_row(postgres, work, args.uploads, args.spacing)
    finally:
        postgres.stop()
    print()
    print(f"events: p95 upload-to-row {p95:.1f} s, {per_change:.2f} calls per changed activity, "
          f"receiver p99 {p99 * 1000:.0f} ms, {lost} lost")


# --- (a) upload to row ----------------------------------------------------------------------------------------

def upload_to_row(postgres: Any, work: Path, uploads: int, spacing: float) -> float:
    import psycopg
    import requests

    from fitness_devtools.airflow_components import AirflowComponents, airflow_cli
    from fitness_devtools.webhooks import subscribed_receiver
    from fitness_emulator import EmulatorSettings, StravaSettings, start_emulator

    database = "latency"
    postgres.create_database(database)
    env = dict(os.environ)
    with start_emulator(EmulatorSettings(strava=StravaSettings(years=1))) as emulator:
        env.update({"AIRFLOW_CONN_FITNESS_DB": postgres.connection_env(database),
                    "AIRFLOW_CONN_STRAVA_DEFAULT": emulator_connection_env(emulator.url),
                    "AIRFLOW_CONN_FITBIT_DEFAULT": emulator_connection_env(emulator.url, "fitbit")})
        os.environ.update(env)
        from fitness_pipeline.tasks.prepare import ensure_schema

        ensure_schema()
        owner = int(emulator.state.strava.settings.athlete_id)
        with closing(psycopg.connect(postgres.dsn(database), autocommit=True)) as conn:
            # as `authorize` makes them known; fitness_sync stays paused: rows come from events only
            conn.execute("UPDATE athlete SET strava_athlete_id = %s WHERE id = 1", (owner,))
            airflow_cli(env, "db", "migrate")
            airflow_cli(env, "dags", "reserialize")
            airflow = AirflowComponents(env, work / "components", scheduled_runs=True, triggerer=True)
            with subscribed_receiver(emulator.url), airflow.running():
                airflow.wait_for_dag("fitness_events", timeout=120)
                airflow.request("PATCH", "/api/v2/dags/fitness_events", json={"is_paused": False})
                time.sleep(10)  # the triggerer picks up the asset's watcher
                rng = random.Random(7)
                sent: dict[int, float] = {}
                arrived: dict[int, float] = {}
                next_upload = time.monotonic()
                deadline = None
                while len(arrived) < uploads:
                    now = time.monotonic()
                    if len(sent) < uploads and now >= next_upload:
                        start = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=rng.randint(5, 300))).replace(
                            microsecond=0)
                        created = requests.post(f"{emulator.url}/_emulator/strava/activities", timeout=10, json={
                            "start_date": start.isoformat(), "sport_type": "Run", "distance": 5000.0 + len(sent),
                            "moving_time": 1500, "elapsed_time": 1550}).json()
                        sent[int(created["id"])] = time.monotonic()
                        next_upload = now + spacing
                        deadline = time.monotonic() + 180
                    waiting = [i for i in sent if i not in arrived]
                    if waiting:
                        found = conn.execute("SELECT id FROM strava_activity WHERE id = ANY(%s)", (waiting,)).fetchall()
                        for (activity_id,) in found:
                            arrived[activity_id] = time.monotonic()
                    if deadline is not None and time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                runs = airflow.dag_runs("fitness_events")
    latencies = [arrived[i] - sent[i] for i in sent if i in arrived]
    missing = uploads - len(latencies)
    kinds = collections.Counter(run.get("run_type") for run in runs)
    print(f"(a) upload to row, {uploads} uploads {spacing:g} s apart, Airflow 3 + triggerer, no poll: "
          f"median {statistics.median(latencies):.1f} s, p95 {percentile(latencies, 0.95):.1f} s, "
          f"max {max(latencies):.1f} s, {missing} not arrived within 180 s; fitness_events runs: {dict(kinds)}",
          flush=True)
    return percentile(latencies, 0.95) if not missing else float("inf")


# --- (b) reads per simulated day -------------------------------------------------------------------------------

def reads_per_day(postgres: Any, changes: int) -> float:
    polling = simulate_day(postgres, "polling", changes, webhooks=False)
    hooked = simulate_day(postgres, "webhooks", changes, webhooks=True)
    assert polling["tables"] == hooked["tables"], "the two days should end with the same tables"
    changed = hooked["changed"]
    per_change = hooked["event_reads"] / changed
    print(f"(b) one athlete, {hooked['changes']} changes to {changed} activities in a simulated day "
          f"({hooked['plan']}):", flush=True)
    for name, day in (("polling hourly", polling), ("webhooks + poll every 6 h", hooked)):
        print(f"    {name}: {day['reads']} Strava reads ({day['listing']} listing, {day['detail']} detail; "
              f"events {day['event_reads']}, poll and enrichment {day['reads'] - day['event_reads']})", flush=True)
    print(f"    webhooks: {per_change:.2f} reads per changed activity for the events; the backstop "
          f"{hooked['reads'] - hooked['event_reads']} a day, against {polling['listing']} listing reads polling "
          f"hourly; tables equal at the end: yes", flush=True)
    return per_change


def simulate_day(postgres: Any, name: str, changes: int, *, webhooks: bool) -> dict[str, Any]:
    import psycopg
    import requests

    from fitness_devtools.webhooks import subscribed_receiver
    from fitness_emulator import EmulatorSettings, StravaSettings, start_emulator
    from fitness_pipeline import tokens
    from fitness_pipeline.handover import RunParams
    from fitness_pipeline.hooks import strava as strava_hook
    from fitness_pipeline.sources import REGISTRY
    from fitness_pipeline.tasks import details, events, extract, load, plan, transform
    from fitness_pipeline.tasks.prepare import ensure_schema

    database = f"day_{name}"
    postgres.create_database(database)
    os.environ["AIRFLOW_CONN_FITNESS_DB"] = postgres.connection_env(database)
    spec = REGISTRY.get("strava_activity")
    run_params = RunParams(strava_poll_every_hours=6 if webhooks else 1)
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    clock = {"now": (day - dt.timedelta(hours=2)).timestamp()}
    saved = (tokens.utcnow, strava_hook.rate_limit_clock)
    with start_emulator(EmulatorSettings(strava=StravaSettings(years=1))) as emulator:
        os.environ["AIRFLOW_CONN_STRAVA_DEFAULT"] = emulator_connection_env(emulator.url, max_rate_limit_wait=0,
                                                                            backoff_factor=0.05)
        os.environ["AIRFLOW_CONN_FITBIT_DEFAULT"] = emulator_connection_env(emulator.url, "fitbit")
        emulator.state.clock = lambda: clock["now"]
        tokens.utcnow = lambda: dt.datetime.fromtimestamp(clock["now"], dt.UTC)
        strava_hook.rate_limit_clock = lambda: clock["now"]
        try:
            ensure_schema()
            strava = f"{emulator.url}/_emulator/strava"

            def sync(run: int, end: dt.datetime, params: RunParams) -> None:
                if plan.polled(spec, params, end):
                    window = plan.window_for_run(spec, params, end - HOUR, end, None)
                    load.load(transform.transform(extract.extract(spec.id, f"{name}_{run}", window)))
                details.enrich(1, share=params.detail_budget_share)

            # before the day: the history listed and detailed (both ways start from the same tables)
            history = RunParams(history_start=(day - dt.timedelta(days=400)).date().isoformat(), history_budget_share=1,
                                detail_budget_share=1)
            load.load(transform.transform(extract.extract(spec.id, f"{name}_history",
                                                          plan.window_for_run(spec, history, None, day, None))))
            while details.enrich(1, share=1.0).read:
                clock["now"] += 900  # the next window of the budget
            owner = int(emulator.state.strava.settings.athlete_id)
            with closing(psycopg.connect(postgres.dsn(database), autocommit=True)) as conn:
                conn.execute("UPDATE athlete SET strava_athlete_id = %s WHERE id = 1", (owner,))
                older = [i for (i,) in conn.execute("SELECT id FROM strava_activity ORDER BY start_date DESC "
                                                    "LIMIT %s", (changes,)).fetchall()]
            plan_of_day = day_of_changes(changes)
            with (subscribed_receiver(emulator.url) if webhooks else contextlib.nullcontext()):
                requests.delete(f"{emulator.url}/_emulator/strava/rate-limits", timeout=10)
                emulator.reset_stats()
                event_reads = 0
                made: list[int] = []
                uploads: list[int] = []
                for hour in range(24):
                    for position, kind in enumerate(plan_of_day[hour]):
                        clock["now"] = (day + hour * HOUR + dt.timedelta(minutes=10 + 5 * position)).timestamp()
                        made.append(make_change(strava, kind, uploads, older,
                                                dt.datetime.fromtimestamp(clock["now"], dt.UTC)))
                        if webhooks:  # applied as they come: fitness_events runs within seconds of an event
                            requests.get(f"{strava}/push", params={"wait": 20, "log": 0}, timeout=30)
                            before = emulator.stats()["requests"].get(DETAIL, 0)
                            events.apply_pending()
                            event_reads += emulator.stats()["requests"].get(DETAIL, 0) - before
                    clock["now"] = (day + (hour + 1) * HOUR + dt.timedelta(minutes=2)).timestamp()
                    sync(hour, day + (hour + 1) * HOUR, run_params)
            stats = emulator.stats()["requests"]
            with closing(psycopg.connect(postgres.dsn(database), autocommit=True)) as conn:
                tables = conn.execute(
                    "SELECT a.id, a.name, a.deleted_at IS NULL, d.lap_count FROM strava_activity a "
                    "LEFT JOIN strava_activity_detail d ON d.activity_id = a.id ORDER BY a.id").fetchall()
            return {"reads": stats.get(LISTING, 0) + stats.get(DETAIL, 0), "listing": stats.get(LISTING, 0),
                    "detail": stats.get(DETAIL, 0), "event_reads": event_reads, "tables": tables,
                    "changed": len(set(made)), "changes": len(made), "plan": describe(plan_of_day)}
        finally:
            tokens.utcnow, strava_hook.rate_limit_clock = saved


def day_of_changes(changes: int) -> list[list[str]]:
    """Which changes happen in which hour: mostly uploads, one of them renamed minutes later, older activities
    renamed, one deleted (seeded)."""
    rng = random.Random(42)
    renames = max(1, changes // 4)
    kinds = ["upload", "rename-new"] + ["upload"] * (changes - renames - 2) + ["rename"] * (renames - 1) + ["delete"]
    hours: list[list[str]] = [[] for _ in range(24)]
    hour = 5
    for position, kind in enumerate(kinds):
        if kind != "rename-new":  # the fresh upload's rename comes in the same hour
            hour = min(23, 5 + position * 17 // len(kinds) + rng.randint(0, 1))
        hours[hour].append(kind)
    return hours


def describe(plan_of_day: list[list[str]]) -> str:
    counts = collections.Counter(kind for hour in plan_of_day for kind in hour)
    names = {"upload": "uploads", "rename-new": "rename of a fresh upload", "rename": "renames of older activities",
             "delete": "deletion of an older activity"}
    return ", ".join(f"{count} {names[kind]}" for kind, count in sorted(counts.items()))


def make_change(strava: str, kind: str, uploads: list[int], older: list[int], now: dt.datetime) -> int:
    """One change through the emulator's controls; returns the activity changed."""
    import requests

    if kind == "upload":
        created = requests.post(f"{strava}/activities", timeout=10, json={
            "start_date": (now - dt.timedelta(minutes=10)).replace(microsecond=0).isoformat(), "sport_type": "Run",
            "distance": 8000.0, "moving_time": 2500, "elapsed_time": 2600}).json()
        uploads.append(int(created["id"]))
        return uploads[-1]
    target = uploads[-1] if kind == "rename-new" else older.pop(0)
    if kind == "delete":
        requests.delete(f"{strava}/activities/{target}", timeout=10).raise_for_status()
    else:
        requests.put(f"{strava}/activities/{target}", json={"name": f"Renamed {target}"}, timeout=10).raise_for_status()
    return target


# --- (c) the receiver alone ------------------------------------------------------------------------------------

def receiver_burst(postgres: Any, burst: int, concurrency: int) -> tuple[float, int]:
    import httpx
    import psycopg

    from fitness_devtools.airflow_components import free_port
    from fitness_pipeline.tasks.prepare import ensure_schema

    database = "receiver"
    postgres.create_database(database)
    os.environ["AIRFLOW_CONN_FITNESS_DB"] = postgres.connection_env(database)
    ensure_schema()
    owner, subscription = 134815, 120475
    with closing(psycopg.connect(postgres.dsn(database), autocommit=True)) as conn:
        conn.execute("UPDATE athlete SET strava_athlete_id = %s WHERE id = 1", (owner,))
    port = free_port()
    env = {**os.environ, "FITNESS_STRAVA_VERIFY_TOKEN": "bench-" + "v" * 30,
           "FITNESS_STRAVA_SUBSCRIPTION_ID": str(subscription)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "fitness_pipeline.receiver:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/strava"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, params={"hub.mode": "subscribe", "hub.challenge": "x",
                                       "hub.verify_token": env["FITNESS_STRAVA_VERIFY_TOKEN"]}, timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the receiver did not start") from None
                time.sleep(0.2)
        events = [{"object_type": "activity", "object_id": 10**10 + n, "aspect_type": "create", "updates": {},
                   "owner_id": owner, "subscription_id": subscription, "event_time": 1_765_000_000 + n}
                  for n in range(burst)]
        latencies, statuses, wall = asyncio.run(send_all(url, events, concurrency))
        with closing(psycopg.connect(postgres.dsn(database), autocommit=True)) as conn:
            (stored,) = conn.execute("SELECT count(*) FROM webhook_event").fetchone()
    finally:
        server.terminate()
        server.wait(10)
    answered = statuses.get(200, 0)
    lost = answered - int(stored)
    p99 = percentile(latencies, 0.99)
    print(f"(c) receiver (uvicorn, 1 worker), {burst:,} distinct events from {concurrency} clients at once: "
          f"{burst / wall:.0f} requests/s, latency median {statistics.median(latencies) * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; answers {dict(statuses)}; "
          f"{stored:,} stored, {lost} lost", flush=True)
    return p99, lost + (burst - answered)


async def send_all(url: str, events: list[dict[str, Any]], concurrency: int
                   ) -> tuple[list[float], collections.Counter[int], float]:
    import httpx

    latencies: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    queue = iter(events)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def worker() -> None:
            for event in queue:
                body = json.dumps(event)
                started = time.perf_counter()
                for _attempt in range(3):  # as Strava: up to three deliveries of an event not answered 200
                    try:
                        response = await client.post(url, content=body,
                                                     headers={"Content-Type": "application/json"})
                        status = response.status_code
                    except httpx.HTTPError:
                        status = 0
                    if status == 200:
                        break
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, statuses, wall


if __name__ == "__main__":
    main()

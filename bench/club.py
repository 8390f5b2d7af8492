"""A club on one Strava application: N athletes synced every hour for a simulated day, within the
application's shared limits (100 reads per 15 minutes, 1,000 per day, for all athletes together).

For each club size (``--sizes``, default 1, 10 and 100 athletes) a fresh emulator holds that many athletes
of one application (the emulator enforces Strava's limits across all of them, as the real API does) and a
fresh embedded PostgreSQL holds the athlete table, their tokens and the shared budget (``api_budget``).
Then ``--hours`` hourly runs of the Strava source: at two minutes past each hour every athlete's mapped
extract → transform → load runs, exactly the task bodies (``tasks.extract/transform/load``), with the
extract's Airflow outcome honoured as the scheduler would: a reschedule (the budget has no room now) puts
that athlete's run back in the queue at the moment it names, a failure counts as a failed run. Time is
simulated: the emulator's clock, the token store's and the budget's (``rate_limit_clock``) follow the
queue, so 24 hours take minutes. ``max_rate_limit_wait`` is 0: every wait is a reschedule (a worker never
sleeps on the budget).

Per size, the reads the emulator counted in the day, the most in any 15-minute window, its 429 answers and
the failed runs; a run still waiting for the budget when the day ends is counted as deferred (Strava's
1,000 reads a day cannot list 100 athletes every hour: 2,400 reads). One line per size::

    club: <n> athletes, <reads> reads/day, peak <p>/15min, <k> 429s, <f> failed runs

    PYTHONPATH=plugins:devtools .venv/bin/python bench/club.py [--sizes 1,10,100] [--hours 24]
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import heapq
import logging
import os
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / d) for d in ("plugins", "devtools")]

from fitness_devtools.embedded_stack import airflow_env, emulator_connection_env, start_postgres  # noqa: E402

HOUR = dt.timedelta(hours=1)
WINDOW_SECONDS = 900
LISTING = "GET /api/v3/athlete/activities"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,100", help="club sizes, comma-separated")
    parser.add_argument("--hours", type=int, default=24)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-club-"))
    os.environ.update(airflow_env(work / "airflow"))
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
    logging.disable(logging.WARNING)  # reschedules are counted, not printed
    lines = []
    for size in (int(s) for s in args.sizes.split(",")):
        started = time.perf_counter()
        result = simulate_day(work / f"pg-{size}", size, args.hours)
        wall = time.perf_counter() - started
        print(f"{size} athletes: {result['runs']} runs, {result['deferrals']} reschedules, {result['deferred']} runs "
              f"still deferred at the end, {result['refreshes']} token refreshes, wall {wall:.0f} s", flush=True)
        lines.append(f"club: {size} athletes, {result['reads']} reads/day, peak {result['peak']}/15min, "
                     f"{result['rate_limited']} 429s, {result['failed']} failed runs")
    print()
    print("\n".join(lines))


def simulate_day(pgdata: Path, size: int, hours: int) -> dict[str, int]:
    from fitness_emulator import EmulatorSettings, StravaSettings, start_emulator
    from fitness_pipeline import athletes, tokens
    from fitness_pipeline.compat import AirflowRescheduleException, AirflowSkipException
    from fitness_pipeline.db import connect, transaction
    from fitness_pipeline.ddl import ensure_schema
    from fitness_pipeline.handover import RunParams
    from fitness_pipeline.hooks import strava as strava_hook
    from fitness_pipeline.sources import REGISTRY
    from fitness_pipeline.tasks import extract, load, plan, transform

    postgres = start_postgres(pgdata, keep=False)
    postgres.create_database("fitness")
    os.environ["AIRFLOW_CONN_FITNESS_DB"] = postgres.connection_env("fitness")
    spec = REGISTRY.get("strava_activity")
    clock = {"now": time.time()}
    try:
        with start_emulator(EmulatorSettings(strava=StravaSettings(years=1))) as emulator:
            os.environ["AIRFLOW_CONN_STRAVA_DEFAULT"] = emulator_connection_env(
                emulator.url, max_rate_limit_wait=0, backoff_factor=0.05)
            emulator.state.clock = lambda: clock["now"]
            tokens.utcnow = lambda: dt.datetime.fromtimestamp(clock["now"], dt.UTC)
            strava_hook.rate_limit_clock = lambda: clock["now"]
            with closing(connect()) as conn:
                ensure_schema(conn)
                members = [1]
                store = tokens.PostgresTokenStore("fitness_db")
                for n in range(2, size + 1):
                    created = emulator.state.strava.add_athlete(n)
                    with transaction(conn) as cur:
                        member = athletes.upsert(cur, f"member{n}", strava_athlete_id=n)
                    store.store_authorized(tokens.token_key("strava", "strava_default", member.id),
                                           tokens.TokenSet(None, created.tokens.refresh_token, None))
                    members.append(member.id)

            # one UTC day (Strava's daily limit resets at midnight UTC): the runs ending at 00:00 .. 23:00 of the
            # next day, each at two minutes past its hour
            start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0,
                                                                              microsecond=0)
            queue: list[tuple[float, int, int, int]] = []  # (due, order, run, athlete)
            for run in range(hours):
                due = (start + run * HOUR + dt.timedelta(minutes=2)).timestamp()
                for order, member in enumerate(members):
                    heapq.heappush(queue, (due, run * 1000 + order, run, member))
            end = (start + hours * HOUR).timestamp()
            per_window: collections.Counter[int] = collections.Counter()
            counts = collections.Counter(runs=0, deferrals=0, failed=0)
            emulator.reset_stats()
            while queue and queue[0][0] < end:
                due, order, run, member = heapq.heappop(queue)
                clock["now"] = due
                interval_end = start + run * HOUR
                window = plan.window_for_run(spec, RunParams(), interval_end - HOUR, interval_end, None)
                before = emulator.stats()["requests"].get(LISTING, 0)
                try:
                    extracted = extract.extract(spec.id, f"club_{run}", window, athlete_id=member)
                    load.load(transform.transform(extracted))
                    counts["runs"] += 1
                except AirflowRescheduleException as reschedule:
                    counts["deferrals"] += 1
                    heapq.heappush(queue, (max(reschedule.reschedule_date.timestamp(), due + 1), order, run, member))
                except AirflowSkipException:
                    counts["runs"] += 1
                except Exception:
                    counts["failed"] += 1
                per_window[int(due) // WINDOW_SECONDS] += emulator.stats()["requests"].get(LISTING, 0) - before
            stats = emulator.stats()
            return {"reads": stats["requests"].get(LISTING, 0), "peak": max(per_window.values(), default=0),
                    "rate_limited": stats.get("rate_limited", 0), "failed": counts["failed"],
                    "runs": counts["runs"], "deferrals": counts["deferrals"], "deferred": len(queue),
                    "refreshes": stats.get("token_refreshes", 0)}
    finally:
        postgres.stop()


if __name__ == "__main__":
    main()

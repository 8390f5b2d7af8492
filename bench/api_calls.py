"""API requests per hourly run of fitness_sync, counted by the emulator.

Runs the DAG's task bodies (extract → transform → load for every source, exactly what
each task calls) for 24 consecutive hourly data intervals against the emulator and an
embedded PostgreSQL. Time is simulated: before each run the emulator's clock and the
token store's clock move forward one hour, so access tokens really expire (Strava after
6 h, Google after 1 h) and new activities appear as hours pass.

Prints, per endpoint: requests in a steady-state hourly run (the median run), in the run
ending at 00:00 UTC (daily full reconciliation), and in all 24 runs; then token refreshes.

Targets (issue "Fitbit data through the Google Health API v4"): per run at most 1 Strava
list call and at most 3 Google calls; token refreshes at most once per token lifetime.

    PYTHONPATH=plugins:devtools .venv/bin/python bench/api_calls.py [--runs 24]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / d) for d in ("plugins", "devtools")]

from fitness_devtools.embedded_stack import airflow_env, emulator_connection_env, start_postgres  # noqa: E402

HOUR = dt.timedelta(hours=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=24)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-api-calls-"))
    os.environ.update(airflow_env(work / "airflow"))
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"  # the table below is the output
    postgres = start_postgres(work / "pgdata", keep=False)
    postgres.create_database("fitness")
    os.environ["AIRFLOW_CONN_FITNESS_DB"] = postgres.connection_env("fitness")

    from fitness_emulator import start_emulator
    from fitness_pipeline import sources, tokens
    from fitness_pipeline.db import connect
    from fitness_pipeline.ddl import ensure_schema
    from fitness_pipeline.handover import RunParams
    from fitness_pipeline.tasks import extract, load, plan, transform

    with start_emulator() as emulator:
        os.environ["AIRFLOW_CONN_STRAVA_DEFAULT"] = emulator_connection_env(emulator.url)
        os.environ["AIRFLOW_CONN_FITBIT_DEFAULT"] = emulator_connection_env(emulator.url, "fitbit")
        with closing(connect()) as conn:
            ensure_schema(conn)

        offset = 0.0
        emulator.state.clock = lambda: time.time() + offset
        tokens.utcnow = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
        # the runs start at the hour after the next 01:00 UTC, so the 24 include one ending at 00:00
        now = dt.datetime.now(dt.UTC)
        first_end = (now + dt.timedelta(days=1)).replace(hour=1, minute=0, second=0, microsecond=0)
        per_run: list[tuple[dt.datetime, Counter[str], float]] = []
        for run in range(args.runs):
            interval_end = first_end + run * HOUR
            offset = (interval_end - now).total_seconds() + 120  # two minutes after the hour
            before = Counter(emulator.stats()["requests"]) + _refreshes(emulator)
            started = time.perf_counter()
            for spec in sources.REGISTRY:
                window = plan.window_for_run(spec, RunParams(), interval_end - HOUR, interval_end, None)
                load.load(transform.transform(extract.extract(spec.id, f"bench_{run}", window)))
            after = Counter(emulator.stats()["requests"]) + _refreshes(emulator)
            per_run.append((interval_end, after - before, time.perf_counter() - started))
    postgres.stop()
    report(per_run)


def _refreshes(emulator: object) -> Counter[str]:
    stats = emulator.stats()  # type: ignore[attr-defined]
    return Counter({"token refreshes: Strava": stats.get("token_refreshes", 0),
                    "token refreshes: Google": stats.get("google_token_refreshes", 0)})


def report(per_run: list[tuple[dt.datetime, Counter[str], float]]) -> None:
    endpoints = sorted({key for _, counts, _ in per_run for key in counts})
    daily = [counts for end, counts, _ in per_run if end.hour == 0]
    hourly = [counts for end, counts, _ in per_run if end.hour != 0]
    total: Counter[str] = sum((counts for _, counts, _ in per_run), Counter())
    print(f"{len(per_run)} hourly runs, simulated from {per_run[0][0] - HOUR:%Y-%m-%d %H:%M} UTC; "
          f"median wall time per run {statistics.median(t for *_, t in per_run):.2f} s")
    print(f"\n{'endpoint':<62}{'hourly run (median)':>20}{'00:00 run':>11}{'24 runs':>9}")
    for key in endpoints:
        median = statistics.median(counts[key] for counts in hourly)
        print(f"{key:<62}{median:>20g}{daily[0][key] if daily else 0:>11}{total[key]:>9}")
    google = [k for k in endpoints if k.split(" ", 1)[-1].startswith("/v4")]
    strava_list = "GET /api/v3/athlete/activities"
    print(f"\nper hourly run: Strava list calls {statistics.median(c[strava_list] for c in hourly):g} (target <= 1); "
          f"Google API calls {statistics.median(sum(c[k] for k in google) for c in hourly):g} (target <= 3)")
    hours = len(per_run)
    print(f"token refreshes in {hours} h: Strava {total['token refreshes: Strava']} (lifetime 6 h: target <= "
          f"{-(-hours // 6)}), Google {total['token refreshes: Google']} (lifetime 1 h: target <= {hours})")


if __name__ == "__main__":
    main()

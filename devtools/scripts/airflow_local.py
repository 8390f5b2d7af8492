"""`make airflow`: a local Airflow 3 on the embedded defaults, with fitness_sync and fitness_events unpaused.

Starts PostgreSQL (pgserver, data in .local/pgdata, shared with `make demo`), the API emulator, the webhook
receiver (subscribed at the emulator for Strava events and Google notifications, as a deployment is at Strava and
Google), and Airflow's API server, scheduler, DAG processor and triggerer (SQLite metadata in .local/airflow,
LocalExecutor), points the connections at the emulator and the fitness database, creates the pools, unpauses
fitness_sync and fitness_events and prints the URLs of the UI, the training page (`<api base>/plugin/training`)
and the emulator. A change made through the emulator's controls (e.g. `POST /_emulator/strava/activities`)
is pushed to the receiver, and fitness_events applies it within seconds. Ctrl-C (or SIGTERM) stops everything.

    --port 8080          the API server / UI port
    --no-schedule        the scheduler runs only triggered runs, no hourly ones (nor event-driven ones)
    --ready-file PATH    write the URLs there once everything is up: the API's, then the emulator's (tests)
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "devtools")]

from fitness_devtools.airflow_components import AirflowComponents, airflow_cli  # noqa: E402
from fitness_devtools.embedded_stack import airflow_env, emulator_connection_env, start_postgres  # noqa: E402

LOCAL = REPO / ".local"
DATABASE = "fitness"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--no-schedule", action="store_true")
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--home", type=Path, default=LOCAL, help=argparse.SUPPRESS)  # tests: a private folder
    args = parser.parse_args()

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    env = {**os.environ, **airflow_env(args.home / "airflow")}
    postgres = start_postgres(args.home / "pgdata", keep=True)
    if not postgres.database_exists(DATABASE):
        postgres.create_database(DATABASE)

    from fitness_emulator import EmulatorSettings, GoogleSettings, StravaSettings, start_emulator

    # a fresh emulator never issued the stored tokens: new refresh tokens make the token store start over
    settings = EmulatorSettings(strava=StravaSettings(initial_refresh_token=secrets.token_hex(16)),
                                google=GoogleSettings(initial_refresh_token=secrets.token_hex(16)))
    with start_emulator(settings) as emulator:
        env.update({"AIRFLOW_CONN_FITNESS_DB": postgres.connection_env(DATABASE),
                    "AIRFLOW_CONN_STRAVA_DEFAULT": emulator_connection_env(emulator.url),
                    "AIRFLOW_CONN_FITBIT_DEFAULT": emulator_connection_env(emulator.url, "fitbit")})
        os.environ.update(env)  # the receiver runs in this process, on the same connections
        from fitness_devtools.webhooks import subscribed_receiver
        from fitness_pipeline.tasks.prepare import ensure_schema

        ensure_schema()  # the receiver's table, before the first run of fitness_sync makes it
        airflow_cli(env, "db", "migrate")
        airflow_cli(env, "dags", "reserialize")
        airflow = AirflowComponents(env, args.home / "airflow" / "components", api_port=args.port,
                                    scheduled_runs=not args.no_schedule, triggerer=True)
        with subscribed_receiver(emulator.url) as receiver, airflow.running():  # pools from include/pools.json
            for dag_id in ("fitness_sync", "fitness_events"):
                airflow.wait_for_dag(dag_id, timeout=120)
                airflow.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
            print(f"\nAirflow is up: {airflow.url}  (no login: simple auth manager, everyone is admin)")
            print(f"The training page (Browse > Training): {airflow.url}/plugin/training")
            print(f"fitness_sync and fitness_events are unpaused; API emulator {emulator.url} (its controls: "
                  f"{emulator.url}/_emulator/...; a change there is pushed to the webhook receiver {receiver.url}); "
                  f"PostgreSQL {postgres.socket_dir} (database {DATABASE!r}); logs in {airflow.workdir}. "
                  "Ctrl-C stops everything.", flush=True)
            if args.ready_file:
                args.ready_file.write_text(f"{airflow.url}\n{emulator.url}\n")
            while not stop.wait(2):
                airflow.check_running()
    print("Stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

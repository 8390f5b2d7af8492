"""`make airflow`: a local Airflow 3 on the embedded defaults, with fitness_sync unpaused.

Starts PostgreSQL (pgserver, data in .local/pgdata, shared with `make demo`), the API emulator,
and Airflow's API server, scheduler and DAG processor (SQLite metadata in .local/airflow,
LocalExecutor), points the connections at the emulator and the fitness database, creates the
pools, unpauses fitness_sync and prints the URLs of the UI and of the training page
(`<api base>/plugin/training`). Ctrl-C (or SIGTERM) stops everything it started.

    --port 8080          the API server / UI port
    --no-schedule        the scheduler runs only triggered runs (tests use this)
    --ready-file PATH    write the URL there once everything is up (tests use this)
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
        airflow_cli(env, "db", "migrate")
        airflow_cli(env, "dags", "reserialize")
        airflow = AirflowComponents(env, args.home / "airflow" / "components", api_port=args.port,
                                    scheduled_runs=not args.no_schedule)
        with airflow.running():  # pools created from include/pools.json
            airflow.wait_for_dag("fitness_sync", timeout=120)
            airflow.request("PATCH", "/api/v2/dags/fitness_sync", json={"is_paused": False})
            print(f"\nAirflow is up: {airflow.url}  (no login: simple auth manager, everyone is admin)")
            print(f"The training page (Browse > Training): {airflow.url}/plugin/training")
            print(f"fitness_sync is unpaused; API emulator {emulator.url}; PostgreSQL {postgres.socket_dir} "
                  f"(database {DATABASE!r}); logs in {airflow.workdir}. Ctrl-C stops everything.", flush=True)
            if args.ready_file:
                args.ready_file.write_text(airflow.url)
            while not stop.wait(2):
                airflow.check_running()
    print("Stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

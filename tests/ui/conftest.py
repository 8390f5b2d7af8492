"""Fixtures for the training page: the demo athlete in PostgreSQL, a real Airflow 3 API server with the
plugin loaded and logins required, and the page's app in-process on any database.

``training_server`` (session) is the one to reuse (the browser tests do)::

    def test_page(training_server):
        token = training_server.login()                        # a JWT of admin (POST /auth/token)
        response = training_server.get("/training/api/sync", token=token)
        training_server.database                               # the demo athlete's database name
        with training_server.connect() as conn: ...            # psycopg 3 connection to it

The server: ``airflow api-server`` on loopback (its own AIRFLOW_HOME, SQLite metadata, migrated),
SimpleAuthManager with ``simple_auth_manager_all_admins = False`` and the users ``admin`` (role admin)
and ``viewer`` (role viewer) whose passwords are :data:`PASSWORDS` (pre-written to
``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``), the plugins folder of this repository
and ``AIRFLOW_CONN_FITNESS_DB`` pointing at the demo database: ``fitness_sync`` run once through
``dag.test()`` against the API emulator with the demo's 120-day lookback, as ``make demo`` does.
No scheduler or DAG processor: the page needs neither.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fitness_devtools.embedded_stack import EmbeddedPostgres, airflow_env, emulator_connection_env

DEMO_DATABASE = "ui_demo"
DEMO_LOOKBACK_DAYS = 120  # what `make demo` loads
USERS = {"admin": "admin", "viewer": "viewer"}  # username -> role
PASSWORDS = {"admin": "admin-" + secrets.token_hex(8), "viewer": "viewer-" + secrets.token_hex(8)}
START_TIMEOUT = 120.0


@dataclass
class TrainingServer:
    """A running Airflow 3 API server with the training plugin; see the module docstring."""

    url: str
    database: str
    postgres: EmbeddedPostgres
    env: dict[str, str]
    home: Path
    log: Path
    passwords: dict[str, str] = field(default_factory=lambda: dict(PASSWORDS))

    def login(self, username: str = "admin", password: str | None = None) -> str:
        """A JWT for ``username`` from ``POST /auth/token`` (SimpleAuthManager)."""
        import requests

        response = requests.post(f"{self.url}/auth/token", timeout=10,
                                 json={"username": username, "password": password or self.passwords[username]})
        assert response.status_code == 201, f"login as {username}: {response.status_code} {response.text[:300]}"
        return str(response.json()["access_token"])

    def get(self, path: str, *, token: str | None = None, cookie: str | None = None, timeout: float = 10,
            **params: Any) -> Any:
        """``GET path`` (``/training/...``): with ``token`` as ``Authorization: Bearer``, or with ``cookie``
        as the ``_token`` cookie the browser sends, or anonymous."""
        import requests

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        cookies = {"_token": cookie} if cookie else {}
        return requests.get(f"{self.url}{path}", params=params or None, headers=headers, cookies=cookies,
                            timeout=timeout, allow_redirects=False)

    def connect(self) -> Any:
        """A psycopg 3 connection to the demo database (the caller closes it)."""
        import psycopg

        return psycopg.connect(self.postgres.dsn(self.database))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``airflow ARGS`` with the server's configuration."""
        from fitness_devtools.airflow_components import airflow_cli

        return airflow_cli(self.env, *args)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def load_demo_athlete(postgres: EmbeddedPostgres, database: str, lookback_days: int = DEMO_LOOKBACK_DAYS) -> None:
    """``fitness_sync`` once through ``dag.test()`` (this process's Airflow) against a new API emulator,
    into ``database``: the demo athlete's last ``lookback_days`` days, and a ``sync_run``, tokens and
    rate-limit usage like a real run leaves."""
    from fitness_devtools.dag_runs import dag_test
    from fitness_emulator import EmulatorSettings, GoogleSettings, StravaSettings, start_emulator
    from tests.test_dag import load_dag

    settings = EmulatorSettings(strava=StravaSettings(initial_refresh_token=secrets.token_hex(16)),
                                google=GoogleSettings(initial_refresh_token=secrets.token_hex(16)))
    with start_emulator(settings) as emulator, pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW_CONN_FITNESS_DB", postgres.connection_env(database))
        env.setenv("AIRFLOW_CONN_STRAVA_DEFAULT", emulator_connection_env(emulator.url, backoff_factor=0.05))
        env.setenv("AIRFLOW_CONN_FITBIT_DEFAULT", emulator_connection_env(emulator.url, "fitbit", backoff_factor=0.05))
        dag = load_dag()
        for task in dag.tasks:
            task.retries = 0
        hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        run = dag_test(dag, logical_date=hour, run_conf={"lookback_hours": lookback_days * 24,
                                                         "daily_full_reconcile": False})
        assert "success" in str(run.state).lower(), f"loading the demo athlete: fitness_sync {run.state}"


@pytest.fixture(scope="session")
def demo_database(postgres: EmbeddedPostgres, airflow_db: None) -> Iterator[str]:
    """A database holding the demo athlete (loaded once per session, ~20 s). Yields its name.
    Tests may add rows but must remove them again (the browser tests read the same database)."""
    postgres.drop_database(DEMO_DATABASE)
    postgres.create_database(DEMO_DATABASE)
    load_demo_athlete(postgres, DEMO_DATABASE)
    yield DEMO_DATABASE
    postgres.drop_database(DEMO_DATABASE)


def server_env(home: Path, port: int, fitness_conn: str) -> dict[str, str]:
    """The API server's environment: logins required (not everyone admin), known users and passwords."""
    from fitness_devtools.airflow_components import component_env

    env = component_env({**os.environ, **airflow_env(home)}, port)
    env.update({
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{user}:{role}" for user, role in USERS.items()),
        "AIRFLOW_CONN_FITNESS_DB": fitness_conn,
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    })
    for name in ("AIRFLOW_CONN_STRAVA_DEFAULT", "AIRFLOW_CONN_FITBIT_DEFAULT"):
        env.pop(name, None)
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(PASSWORDS))
    return env


@pytest.fixture(scope="session")
def training_server(postgres: EmbeddedPostgres, demo_database: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainingServer]:
    """A real Airflow 3 API server with the plugin, logins required, on the demo athlete; see the module
    docstring. Stopped (its whole process group) at the end of the session."""
    import requests

    from fitness_devtools.airflow_components import airflow_cli, free_port

    home = tmp_path_factory.mktemp("training-airflow")
    port = free_port()
    env = server_env(home, port, postgres.connection_env(demo_database))
    airflow_cli(env, "db", "migrate", timeout=180)
    log = home / "api-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "airflow", "api-server", "--port", str(port),
                                    "--host", "127.0.0.1"], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = TrainingServer(url=f"http://127.0.0.1:{port}", database=demo_database, postgres=postgres, env=env,
                            home=home, log=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, f"airflow api-server exited {process.returncode}:\n{server.log_tail()}"
            assert time.monotonic() < deadline, f"airflow api-server not up in {START_TIMEOUT:.0f} s:\n" \
                                                f"{server.log_tail()}"
            with suppress(requests.RequestException, ValueError):
                health = requests.get(f"{server.url}/api/v2/monitor/health", timeout=5).json()
                if health["metadatabase"]["status"] == "healthy":
                    break
            time.sleep(0.5)
        yield server
    finally:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@pytest.fixture
def training_app(fitness_db: str) -> Any:
    """The page's FastAPI app in-process on ``fitness_db`` (a new empty database, no schema), with Airflow's
    login dependency overridden: for the database states a real server is not needed for. Returns a
    Starlette ``TestClient``."""
    from fastapi.testclient import TestClient

    from fitness_pipeline.ui.app import create_app

    app = create_app()
    app.dependency_overrides[app.state.requires_login] = lambda: None
    app.dependency_overrides[app.state.user_name] = lambda: "admin"
    return TestClient(app)

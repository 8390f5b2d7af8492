"""Faults without an answer end in a clear error: which connection, what happened, which extras govern it and what
to do, within a documented time bound (issue 10, defects 5 and 7).

- a hung API (the emulator answers slower than ``read_timeout``) and a closed port, against the Strava hook;
- PostgreSQL unreachable, through ``db.connect``;
- two ``make demo`` at once: the second waits for the first.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from fitness_devtools.embedded_stack import emulator_connection_env
from fitness_pipeline.errors import RetriableError
from fitness_pipeline.hooks import StravaHook
from fitness_pipeline.hooks.base import DEFAULT_MAX_REQUEST_SECONDS, RetriableApiError

REPO = Path(__file__).resolve().parents[1]
NOW = dt.datetime.now(dt.UTC)
WEEK_AGO = NOW - dt.timedelta(days=7)
#: what a test run may add to a computed bound: the token refresh, process scheduling on a loaded machine
SLACK = 3.0


def set_faults(emulator: Any, **faults: Any) -> None:
    requests.post(f"{emulator.url}/_emulator/faults", json=faults, timeout=5).raise_for_status()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def documented_bound(*, connect_timeout: float, read_timeout: float, max_retries: int, backoff_factor: float,
                     max_request_seconds: float = DEFAULT_MAX_REQUEST_SECONDS) -> float:
    """The README's bound on one request to a hung endpoint: min((n+1) x (connect+read) + backoff(n),
    max(max_request_seconds, connect+read)), backoff(n) = sum over k = 2..n of min(60, f x 2^(k-1) + f)."""
    attempt = connect_timeout + read_timeout
    backoff = sum(min(60.0, backoff_factor * 2 ** (k - 1) + backoff_factor) for k in range(2, max_retries + 1))
    return min((max_retries + 1) * attempt + backoff, max(max_request_seconds, attempt))


def test_a_hung_api_fails_clearly_within_the_retry_bound(connect_strava: Any, make_emulator: Any) -> None:
    extras = {"connect_timeout": 1, "read_timeout": 0.5, "max_retries": 2, "backoff_factor": 0.05}
    emulator = connect_strava(make_emulator(), credential_store_conn_id="memory", **extras)
    set_faults(emulator, slow_next=50, slow_seconds=5)
    started = time.monotonic()
    with pytest.raises(RetriableApiError) as raised:
        StravaHook().list_activities(WEEK_AGO, NOW)
    elapsed = time.monotonic() - started
    message = str(raised.value)
    assert isinstance(raised.value, RetriableError)
    assert message.startswith("Strava (connection 'strava_default'): GET /api/v3/athlete/activities timed out reading "
                              "after 0.5 s, 3 attempts in "), message
    assert "read_timeout=0.5" in message and "max_retries=2" in message and "the task retries" in message
    assert "?" not in message and "after=" not in message  # the path only: no query string
    assert elapsed < documented_bound(**extras) + SLACK


def test_max_request_seconds_caps_the_retries_of_a_hung_api(connect_strava: Any, make_emulator: Any) -> None:
    # 10 retries of 0.5 s would take over 5 s; the deadline of 2 s leaves room for two attempts of at most 1 s each
    extras = {"connect_timeout": 0.5, "read_timeout": 0.5, "max_retries": 10, "backoff_factor": 0.05,
              "max_request_seconds": 2}
    emulator = connect_strava(make_emulator(), credential_store_conn_id="memory", **extras)
    set_faults(emulator, slow_next=50, slow_seconds=5)
    hook = StravaHook()
    hook.access_token()  # the refresh (not slowed) before the clock starts
    started = time.monotonic()
    with pytest.raises(RetriableApiError, match=r"timed out reading after 0\.5 s, 2 attempts in") as raised:
        hook.list_activities(WEEK_AGO, NOW)
    elapsed = time.monotonic() - started
    assert "max_request_seconds=2" in str(raised.value) and "no time left" in str(raised.value)
    assert elapsed < documented_bound(**extras) + SLACK
    assert elapsed < 2 + 1.0


def test_a_closed_port_fails_clearly(make_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = make_emulator()
    port = closed_port()
    conn = json.loads(emulator_connection_env(emulator.url, credential_store_conn_id="memory", max_retries=1,
                                              backoff_factor=0.05))
    conn["extra"]["refresh_url"] = StravaHook.api.default_token_url(emulator.url)  # tokens from the emulator
    conn["host"] = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AIRFLOW_CONN_STRAVA_DEFAULT", json.dumps(conn))
    with pytest.raises(RetriableApiError) as raised:
        StravaHook().list_activities(WEEK_AGO, NOW)
    message = str(raised.value)
    assert message.startswith("Strava (connection 'strava_default'): GET /api/v3/athlete/activities could not "
                              "connect (ConnectionRefusedError"), message
    assert "check the connection's host and port" in message and "max_retries=1" in message
    assert "Max retries exceeded" not in message


def test_an_unreachable_token_endpoint_fails_clearly(make_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = make_emulator()
    conn = json.loads(emulator_connection_env(emulator.url, credential_store_conn_id="memory"))
    conn["host"] = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_STRAVA_DEFAULT", json.dumps(conn))
    with pytest.raises(RetriableApiError, match=r"^Strava \(connection 'strava_default'\): POST /oauth/token could "
                                                r"not connect \(ConnectionRefusedError"):
        StravaHook().list_activities(WEEK_AGO, NOW)


def test_an_unreachable_database_names_the_connection_not_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from fitness_pipeline.db import connect

    password = "s3cret-Pa55word"
    monkeypatch.setenv("AIRFLOW_CONN_FITNESS_DB", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": closed_port(), "login": "postgres",
        "password": password, "schema": "fitness"}))
    with pytest.raises(RetriableError) as raised:
        connect()
    message = str(raised.value)
    assert message.startswith("PostgreSQL (connection 'fitness_db') at 127.0.0.1:"), message
    assert "OperationalError" in message
    assert "check the fitness_db connection's host/port and that PostgreSQL is running" in message
    assert password not in message and "password=" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no driver chain with the DSN


@pytest.mark.slow
def test_two_demos_at_once_both_succeed_one_after_the_other(tmp_path: Path) -> None:
    env = {**os.environ, "FITNESS_DEMO_DIR": str(tmp_path / "local")}
    for name in ("AIRFLOW_HOME", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
                 "AIRFLOW_CONN_FITNESS_DB", "AIRFLOW_CONN_STRAVA_DEFAULT", "AIRFLOW_CONN_FITBIT_DEFAULT"):
        env.pop(name, None)  # the demo's own, not the test session's
    demos = [subprocess.Popen([sys.executable, str(REPO / "devtools" / "scripts" / "demo.py")], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [demo.communicate(timeout=300)[0] for demo in demos]
    assert [demo.returncode for demo in demos] == [0, 0], [out[-3000:] for out in outputs]
    waited = [out for out in outputs if "another make demo is running (pid " in out]
    assert len(waited) == 1, outputs  # the second one said so, then waited
    assert all("Done in" in out for out in outputs)

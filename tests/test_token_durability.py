"""A rotated Strava refresh token survives a fault between the token response and its commit
(issue 10, defect 1): the connection killed, the database unreachable, the process SIGKILLed.

Strava (and the emulator) kill the old refresh token the moment a new one is issued, so a token
response that never reaches ``oauth_token`` used to lock the athlete out until a person
re-authorized. Each test checks that the next ``get_token`` (or a new process) goes on with the
rotated token and never presents the dead one again."""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import psycopg
import pytest

import fitness_pipeline
from fitness_pipeline.errors import RetriableError
from fitness_pipeline.hooks import StravaHook
from fitness_pipeline.tokens import PostgresTokenStore, TokenSet
from tests.helpers import stored_tokens

KEY = "strava:strava_default"
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "token-spool"
    monkeypatch.setenv("FITNESS_TOKEN_SPOOL_DIR", str(directory))
    return directory


@pytest.fixture
def admin(postgres: Any, fitness_db: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the test's own to the fitness database, outside the store."""
    with psycopg.connect(postgres.dsn(fitness_db), autocommit=True) as conn:
        yield conn


@pytest.fixture
def rotating_strava(connect_strava: Any, make_emulator: Any) -> Any:
    """Every refresh rotates the refresh token (and kills the old one)."""
    return connect_strava(make_emulator(same_token_min_remaining=10**9))


def terminate_other_backends(admin: psycopg.Connection[Any]) -> int:
    """Drop every other session of the fitness database, as a PostgreSQL restart or a dropped link does."""
    rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
    return len(rows)


def process_env() -> dict[str, str]:
    """The environment of a worker process that imports the same fitness_pipeline as this one."""
    package_root = str(Path(fitness_pipeline.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                                     os.environ.get("PYTHONPATH")]))}


def valid_refresh_token(emulator: Any) -> str:
    return str(emulator.state.strava.tokens.refresh_token)


def test_connection_killed_right_after_the_token_response(rotating_strava: Any, admin: Any,
                                                          spool_dir: Path) -> None:
    emulator = rotating_strava
    hook = StravaHook()
    seed = hook._refresh_token_from_connection()
    store = PostgresTokenStore("fitness_db")
    received: list[TokenSet] = []

    def refresh_then_kill_the_session(refresh_token: str) -> TokenSet:
        received.append(hook._refresh(refresh_token))  # Strava has rotated: the seed is dead now
        assert terminate_other_backends(admin) >= 1
        return received[-1]

    with suppress(Exception):  # this try may fail; what matters is that the rotated token is not lost
        store.get_token(KEY, seed, refresh_then_kill_the_session, 300)
    assert emulator.stats()["token_refreshes"] == 1
    assert received[0].refresh_token == valid_refresh_token(emulator) != seed
    # the next refresh (forced) presents the rotated token, which the emulator accepts
    tokens = store.get_token(KEY, seed, hook._refresh, math.inf)
    assert emulator.stats()["token_refreshes"] == 2
    assert tokens.refresh_token == valid_refresh_token(emulator)
    ((_, _, stored),) = stored_tokens(admin)
    assert stored == valid_refresh_token(emulator)
    assert StravaHook().list_activities(NOW - dt.timedelta(days=3), NOW) is not None
    assert list(spool_dir.glob("*.json")) == []  # nothing left pending once the row is committed


def test_database_unreachable_after_the_response_then_replayed(rotating_strava: Any, admin: Any, spool_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    emulator = rotating_strava
    hook = StravaHook()
    seed = hook._refresh_token_from_connection()
    store = PostgresTokenStore("fitness_db")
    real_connect = store._connect
    database_down = False

    def connect() -> Any:
        if database_down:
            raise psycopg.OperationalError("connection refused (the test's database is down)")
        return real_connect()

    monkeypatch.setattr(store, "_connect", connect)

    def refresh_then_database_down(refresh_token: str) -> TokenSet:
        nonlocal database_down
        fresh = hook._refresh(refresh_token)
        database_down = True
        terminate_other_backends(admin)
        return fresh

    with pytest.raises(RetriableError, match="could not be stored"):  # a later try may succeed
        store.get_token(KEY, seed, refresh_then_database_down, 300)
    rotated = valid_refresh_token(emulator)
    assert rotated != seed
    spooled, = spool_dir.glob("*.json")  # the response waits on the local disk, for owner only
    assert stat.S_IMODE(spooled.stat().st_mode) == 0o600
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
    assert rotated in spooled.read_text()

    database_down = False  # back after a while: a new store (another task) replays the spool first
    tokens = PostgresTokenStore("fitness_db").get_token(KEY, seed, hook._refresh, 300)
    assert emulator.stats()["token_refreshes"] == 1  # the spooled access token is still valid: reused
    assert tokens.refresh_token == rotated
    ((_, _, stored),) = stored_tokens(admin)
    assert stored == rotated
    assert list(spool_dir.glob("*.json")) == []
    PostgresTokenStore("fitness_db").get_token(KEY, seed, hook._refresh, math.inf)  # and it refreshes fine
    assert emulator.stats()["token_refreshes"] == 2
    logged = caplog.text
    assert rotated not in logged and str(tokens.access_token) not in logged and seed not in logged


ACCESS_TOKEN_IN_A_PROCESS = """
from fitness_pipeline.hooks import StravaHook
StravaHook().access_token()
print("done")
"""

LIST_IN_A_PROCESS = """
import datetime as dt
from fitness_pipeline.hooks import StravaHook
now = dt.datetime.now(dt.UTC)
print(len(StravaHook().list_activities(now - dt.timedelta(days=3), now)))
"""


def test_process_killed_between_the_response_and_the_commit(rotating_strava: Any, schema: Any, admin: Any,
                                                            spool_dir: Path) -> None:
    emulator = rotating_strava
    seed = valid_refresh_token(emulator)
    # every write of the token row stalls in the database, so the process can be killed while its
    # write of the new tokens is in flight (after the token endpoint answered, before the commit)
    admin.execute("CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS "
                  "$$ BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$")
    admin.execute("CREATE TRIGGER stall BEFORE UPDATE ON oauth_token FOR EACH ROW EXECUTE FUNCTION stall()")
    worker = subprocess.Popen([sys.executable, "-c", ACCESS_TOKEN_IN_A_PROCESS], env=process_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        stalled: list[Any] = []
        while not stalled and worker.poll() is None and time.monotonic() < deadline:
            stalled = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND wait_event = 'PgSleep'").fetchall()
            time.sleep(0.05)
        assert stalled, f"the worker never wrote the token row: {worker.communicate(timeout=5)}"
        assert emulator.stats()["token_refreshes"] == 1
        os.kill(worker.pid, signal.SIGKILL)
        worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate(timeout=30)
    for (pid,) in stalled:  # its session ends with it (PostgreSQL notices a dead client only later)
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.execute("DROP TRIGGER stall ON oauth_token")
    rotated = valid_refresh_token(emulator)
    assert rotated != seed  # the seed is dead; only the killed process ever saw the rotated token

    recovery = subprocess.run([sys.executable, "-c", LIST_IN_A_PROCESS], env=process_env(),
                              capture_output=True, text=True, timeout=120)
    assert recovery.returncode == 0, recovery.stderr[-3000:]
    assert emulator.stats()["token_refreshes"] == 1  # the killed process's access token is reused
    ((_, _, stored),) = stored_tokens(admin)
    assert stored == rotated
    assert list(spool_dir.glob("*.json")) == []
    assert rotated not in recovery.stdout + recovery.stderr

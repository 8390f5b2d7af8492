"""Fixtures: a real PostgreSQL (pgserver) with a fresh database per test, the API emulator
over loopback HTTP, and a self-contained Airflow (SQLite) for DAG runs."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from fitness_devtools.embedded_stack import (
    EmbeddedPostgres,
    airflow_env,
    emulator_connection_env,
    prepare_airflow_db,
    start_postgres,
)

# Airflow reads its configuration at import: set it before any test module imports airflow.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="fitness-tests-"))
os.environ.update(airflow_env(_SESSION_DIR / "airflow"))


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's own metadata database (SQLite) with the pools, prepared once per test session (~6 s)."""
    prepare_airflow_db()


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    """One embedded PostgreSQL server for the whole run, deleted at the end."""
    server = start_postgres(_SESSION_DIR / "pgdata", keep=False)
    yield server
    server.stop()


@pytest.fixture
def fitness_db(postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new, empty database, reachable as Airflow connection ``fitness_db``. Yields its name."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    monkeypatch.setenv("AIRFLOW_CONN_FITNESS_DB", postgres.connection_env(name))
    yield name
    postgres.drop_database(name)


@pytest.fixture
def db_conn(fitness_db: str) -> Iterator[Any]:
    """A DB-API connection to ``fitness_db`` through ``PostgresHook`` (psycopg 3 on Airflow 3)."""
    from fitness_pipeline.db import connect

    with closing(connect()) as conn:
        yield conn


@pytest.fixture
def schema(db_conn: Any) -> Any:
    """``db_conn`` with the fitness schema applied."""
    from fitness_pipeline.ddl import ensure_schema

    ensure_schema(db_conn)
    return db_conn



@pytest.fixture
def make_emulator() -> Iterator[Callable[..., Any]]:
    """Start API emulators (real HTTP on loopback); ``make_emulator(google={...}, **strava_settings)``."""
    from fitness_emulator import EmulatorSettings, GoogleSettings, StravaSettings, start_emulator

    started: list[Any] = []

    def make(google: dict[str, Any] | None = None, **strava: Any) -> Any:
        emulator = start_emulator(EmulatorSettings(strava=StravaSettings(**{"years": 1, **strava}),
                                                   google=GoogleSettings(**{"years": 1, **(google or {})})))
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def connect_strava(make_emulator: Callable[..., Any], fitness_db: str,
                   monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Point connection ``strava_default`` at an emulator; ``extra`` goes to the Connection's extra."""

    def connect(emulator: Any = None, **extra: Any) -> Any:
        emulator = emulator or make_emulator()
        extra = {"backoff_factor": 0.05, **extra}  # fast retries in tests
        monkeypatch.setenv("AIRFLOW_CONN_STRAVA_DEFAULT", emulator_connection_env(emulator.url, **extra))
        return emulator

    return connect


@pytest.fixture
def connect_fitbit(make_emulator: Callable[..., Any], fitness_db: str,
                   monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Point connection ``fitbit_default`` at an emulator's Google side."""

    def connect(emulator: Any = None, **extra: Any) -> Any:
        emulator = emulator or make_emulator()
        extra = {"backoff_factor": 0.05, **extra}
        monkeypatch.setenv("AIRFLOW_CONN_FITBIT_DEFAULT", emulator_connection_env(emulator.url, "fitbit", **extra))
        return emulator

    return connect


@pytest.fixture
def all_connections(make_emulator: Callable[..., Any], connect_strava: Callable[..., Any],
                    connect_fitbit: Callable[..., Any]) -> Any:
    """One emulator behind both ``strava_default`` and ``fitbit_default``. Returns the emulator."""
    emulator = make_emulator()
    connect_strava(emulator)
    connect_fitbit(emulator)
    return emulator


@pytest.fixture
def strava_connection(connect_strava: Callable[..., Any]) -> Any:
    """A default emulator behind ``strava_default``, tokens stored in ``fitness_db``. Returns the emulator."""
    return connect_strava()

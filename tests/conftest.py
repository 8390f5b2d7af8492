"""Fixtures: a real PostgreSQL (pgserver) with a fresh database per test, the API emulator
over loopback HTTP, and a self-contained Airflow (SQLite) for DAG runs."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from embedded_stack import EmbeddedPostgres, airflow_env, start_postgres

# Airflow reads its configuration at import: set it before any test module imports airflow.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="fitness-tests-"))
os.environ.update(airflow_env(_SESSION_DIR / "airflow"))


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
    from fitness_pipeline.tasks import connect

    with closing(connect()) as conn:
        yield conn


@pytest.fixture
def schema(db_conn: Any) -> Any:
    """``db_conn`` with the fitness schema applied."""
    from fitness_pipeline.ddl import ensure_schema

    ensure_schema(db_conn)
    return db_conn


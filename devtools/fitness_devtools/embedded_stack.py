"""The embedded defaults that stand in for a deployment: PostgreSQL from the ``pgserver``
wheel and Airflow configured through environment variables.

Used by ``make demo``, the tests and the benchmarks; nothing here is imported by the DAG.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@dataclass
class EmbeddedPostgres:
    """A running PostgreSQL server on a Unix socket (``pgserver``)."""

    server: Any
    socket_dir: str
    port: int

    def connection(self, database: str = "postgres") -> dict[str, Any]:
        """An Airflow Connection (JSON form) for ``database``."""
        return {"conn_type": "postgres", "host": self.socket_dir, "port": self.port, "login": "postgres",
                "schema": database}

    def connection_env(self, database: str = "postgres") -> str:
        return json.dumps(self.connection(database))

    def dsn(self, database: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={database}"

    def admin(self, sql: str) -> None:
        """Run ``sql`` outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql)

    def stop(self) -> None:
        """Stop the server now (and delete its data if it was started with ``keep=False``)."""
        logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs from atexit otherwise
        self.server.cleanup()

    def create_database(self, name: str) -> None:
        self.admin(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def database_exists(self, name: str) -> bool:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def start_postgres(data_dir: Path, *, keep: bool = True) -> EmbeddedPostgres:
    """Start (or reuse) the server whose data lives in ``data_dir``.

    ``keep=False`` deletes the data when this process exits (tests); otherwise the server
    stops at exit and the data stays for the next run (demo).
    """
    # pgserver keeps a lock file in the user's runtime dir; without XDG_RUNTIME_DIR it warns and uses /tmp
    runtime = Path(tempfile.gettempdir()) / f"fitness-runtime-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    import pgserver

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop" if keep else "delete")
    info = server.get_postmaster_info()
    return EmbeddedPostgres(server=server, socket_dir=str(info.socket_dir), port=int(info.port or 5432))


def emulator_connection_env(emulator_url: str, conn_type: str = "strava", **extra: Any) -> str:
    """An Airflow Connection (JSON) for the emulator's ``conn_type`` side, with its current refresh token.

    ``extra`` adds Connection extras (e.g. ``credential_store_conn_id``, ``rate_limit_window_seconds``).
    """
    import requests

    response = requests.get(f"{emulator_url}/_emulator/{conn_type}/connection", timeout=10)
    response.raise_for_status()
    conn = response.json()
    conn["extra"] = {**conn.get("extra", {}), **extra}
    return json.dumps({"conn_type": conn_type, **conn})


POOLS_FILE = REPO / "include" / "pools.json"


def prepare_airflow_db() -> None:
    """Migrate Airflow's metadata database and create the pools the DAG's extract tasks use."""
    import subprocess
    import sys

    for command in (["db", "migrate"], ["pools", "import", str(POOLS_FILE)]):
        subprocess.run([sys.executable, "-m", "airflow", *command], check=True, capture_output=True)


def fernet_key(home: Path) -> str:
    """The Fernet key of this Airflow home (Connections and the stored OAuth tokens are encrypted with it),
    made once and kept in ``<home>/fernet.key`` (mode 0600): a later run must decrypt what an earlier stored."""
    from cryptography.fernet import Fernet

    path = home / "fernet.key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(Fernet.generate_key().decode())
    return path.read_text().strip()


def airflow_env(home: Path) -> dict[str, str]:
    """Environment variables that make a self-contained Airflow (SQLite metadata, no examples)."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "AIRFLOW_HOME": str(home),
        # one key for everything that shares the fitness database: Airflow components started from a process
        # that has a key use that one (their stored tokens must be readable by it), else this home's
        "AIRFLOW__CORE__FERNET_KEY": os.environ.get("AIRFLOW__CORE__FERNET_KEY") or fernet_key(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "plugins"), str(REPO / "devtools"),
                                                     os.environ.get("PYTHONPATH", "")])),
    }

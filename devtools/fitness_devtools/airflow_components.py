"""Airflow 3's scheduler, dag-processor and API server as subprocesses on the embedded defaults
(SQLite metadata, LocalExecutor), for tests that need a real deployment (backfills).

>>> airflow = AirflowComponents({**os.environ, **airflow_env(tmp / "airflow")}, tmp / "components")
>>> airflow.cli("db", "migrate")
>>> with airflow.running():          # started, healthy, pools created
...     airflow.cli("dags", "unpause", "fitness_sync")
>>>                                  # stopped, whatever happened inside

Each component runs in its own process group with stdout/stderr in ``<workdir>/<name>.log``;
on the way out all of them (and whatever they started: executor workers, task processes) are
terminated, then killed. If the body raised, the tails of their logs (and of task logs with an
error) go to stderr, where pytest shows them with the failure.

Nothing here is imported by the DAG.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fitness_devtools.embedded_stack import POOLS_FILE

COMPONENTS = ("api-server", "scheduler", "dag-processor")
#: the triggerer runs deferred tasks' triggers and asset watchers (DAG fitness_events); started on request
TRIGGERER = "triggerer"
STOP_TIMEOUT = 15.0


def free_port() -> int:
    """A TCP port nobody listens on right now (a small race with other processes remains)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def component_env(env: Mapping[str, str], api_port: int, *, log_server_port: int | None = None,
                  parallelism: int = 4, scheduled_runs: bool = False) -> dict[str, str]:
    """``env`` (an ``airflow_env()`` environment plus connections) with what the components need to
    work together on one machine, quickly: LocalExecutor, workers calling the API server on
    ``api_port``, one JWT secret, no auth (simple auth manager, everyone admin), short poll intervals.

    ``scheduled_runs=False``: the scheduler creates no runs from schedules, it only runs what someone
    queues (backfills, triggers); otherwise unpausing a DAG also starts a run for its latest interval."""
    jwt_secret = env.get("AIRFLOW__API_AUTH__JWT_SECRET") or secrets.token_urlsafe(64)
    database = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    if database.startswith("sqlite") and "timeout=" not in database:
        # four processes write to one SQLite file: wait up to 30 s for its lock instead of sqlite3's 5
        database += ("&" if "?" in database else "?") + "timeout=30"
    return {
        **env,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # as in a deployment: unpausing is a step
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": env.get("AIRFLOW__API__SECRET_KEY") or secrets.token_urlsafe(64),
        # the scheduler signs the tasks' tokens, the API server checks them: the same secret for all
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        # the scheduler's log server; its default 8793 collides with any other Airflow on the machine
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_server_port or free_port()),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(scheduled_runs),
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",  # default 1 s between scheduling loops
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",  # look for new DAG files every 5 s, not 300
        # each parse is a process (~1 CPU-s); the files do not change while a test runs
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "300",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
        "AIRFLOW__LOGGING__NAMESPACE_LEVELS": "http.access=WARNING",  # a line per task API call: noise, CPU
        "PYTHONUNBUFFERED": "1",
    }


def airflow_cli(env: Mapping[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m airflow ARGS`` in ``env``; raises with its output if it fails."""
    result = subprocess.run([sys.executable, "-m", "airflow", *args], env=dict(env), capture_output=True,
                            text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} exited {result.returncode}:\n"
                           f"{_tail(result.stdout, 30)}\n{_tail(result.stderr, 30)}")
    return result


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes] = field(repr=False)


class AirflowComponents:
    """API server, scheduler and dag-processor for ``env`` (an ``airflow_env()`` environment plus
    connections; see :func:`component_env` for what is added), logs in ``workdir``. :meth:`cli`
    runs Airflow commands against the same metadata database, before or while they run."""

    def __init__(self, env: Mapping[str, str], workdir: Path, *, api_port: int | None = None,
                 triggerer: bool = False, **settings: Any) -> None:
        self.api_port = api_port or free_port()
        self.names = (*COMPONENTS, TRIGGERER) if triggerer else COMPONENTS
        self.env = component_env(env, self.api_port, **settings)
        self.workdir = workdir
        self.components: dict[str, Component] = {}
        #: CPU time each component used, with its processes (tasks included), measured by :meth:`stop`
        self.cpu_seconds: dict[str, float] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @contextmanager
    def running(self, *, pools_file: Path | None = POOLS_FILE, healthy_timeout: float = 90
                ) -> Iterator[AirflowComponents]:
        """Start the components, wait until they are healthy, create the pools of ``pools_file``
        (by default the ones the DAG's extract tasks use), yield; stop them all on the way out."""
        try:
            self.start()
            self.wait_until_healthy(healthy_timeout)
            if pools_file:
                self.create_pools(pools_file)
            yield self
        except BaseException:
            print(f"Airflow components' logs (in {self.workdir}):\n{self.log_tails()}", file=sys.stderr)
            raise
        finally:
            self.stop()

    # --- start / stop ------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        commands = {"api-server": ["api-server", "--port", str(self.api_port), "--host", "127.0.0.1"],
                    "scheduler": ["scheduler"], "dag-processor": ["dag-processor"], TRIGGERER: ["triggerer"]}
        for name in self.names:
            log = self.workdir / f"{name}.log"
            log_file = log.open("wb")
            process = subprocess.Popen([sys.executable, "-m", "airflow", *commands[name]], env=self.env,
                                       stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # own process group: stop() ends all it started
            self.components[name] = Component(name, process, log, log_file)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM every component's process group, wait, then SIGKILL what is left (also any
        descendant that left the group). Safe to call twice."""
        import psutil

        descendants: list[psutil.Process] = []
        for component in self.components.values():
            with suppress(psutil.Error):
                leader = psutil.Process(component.process.pid)
                children = leader.children(recursive=True)
                descendants += children
                self.cpu_seconds[component.name] = sum(_cpu(p) for p in [leader, *children])
        for name in ("scheduler", "dag-processor", "api-server"):  # the scheduler first: it stops starting tasks
            if name in self.components:
                _signal_group(self.components[name].process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for component in self.components.values():
            with suppress(subprocess.TimeoutExpired):
                component.process.wait(max(0.1, deadline - time.monotonic()))
        for component in self.components.values():
            _signal_group(component.process, signal.SIGKILL)  # stragglers in the group, even if the leader exited
            with suppress(subprocess.TimeoutExpired):
                component.process.wait(5)
            component.log_file.close()
        for process in descendants:
            with suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(descendants, timeout=5)

    # --- waiting -----------------------------------------------------------------------

    def check_running(self) -> None:
        """Raise if a component exited."""
        for component in self.components.values():
            if (code := component.process.poll()) is not None:
                raise RuntimeError(f"airflow {component.name} exited with {code} (log: {component.log})")

    def wait_until_healthy(self, timeout: float = 60) -> dict[str, Any]:
        """Until the API server answers and reports the metadatabase, scheduler and dag-processor healthy."""
        import requests

        deadline = time.monotonic() + timeout
        health: Any = None
        while time.monotonic() < deadline:
            self.check_running()
            with suppress(requests.RequestException, ValueError):
                health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
                if all((health.get(part) or {}).get("status") == "healthy"
                       for part in ("metadatabase", "scheduler", "dag_processor")):
                    return dict(health)
            time.sleep(0.5)
        raise TimeoutError(f"components not healthy after {timeout:.0f} s (last: {health})")

    def wait_for_dag(self, dag_id: str, timeout: float = 60) -> dict[str, Any]:
        """Until the dag-processor has serialized ``dag_id``; fails at once on an import error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_running()
            response = self.request("GET", f"/api/v2/dags/{dag_id}", ok=(200, 404))
            if response.status_code == 200:
                return dict(response.json())
            errors = self.get("/api/v2/importErrors").get("import_errors", [])
            if errors:
                raise RuntimeError(f"DAG import errors: {json.dumps(errors, indent=1)}")
            time.sleep(0.5)
        raise TimeoutError(f"{dag_id} not serialized after {timeout:.0f} s")

    # --- talking to it -----------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``airflow ARGS`` against these components' metadata database."""
        return airflow_cli(self.env, *args, timeout=timeout)

    def request(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        """A REST API call (the simple auth manager lets everyone in as admin). 60 s to answer: on a busy machine
        the API server waits for SQLite's lock behind the scheduler, the DAG processor and the triggerer."""
        import requests

        response = requests.request(method, f"{self.url}{path}", timeout=60, **kwargs)
        if response.status_code not in ok:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def create_pools(self, pools_file: Path = POOLS_FILE) -> None:
        """The pools of ``pools_file`` (``airflow pools import`` format), through the REST API: one
        CLI process less than ``airflow pools import``."""
        for name, pool in json.loads(pools_file.read_text()).items():
            body = {"name": name, "slots": pool["slots"], "description": pool.get("description"),
                    "include_deferred": pool.get("include_deferred", False)}
            # SQLite is locked now and then while five processes start on it (the API server answers 500
            # "Database error"): a few tries, a second apart; the POST is idempotent (409: there already)
            for attempt in range(5):
                answer = self.request("POST", "/api/v2/pools", ok=(201, 409, 500, 503), json=body)
                if answer.status_code < 500:
                    break
                if attempt == 4:
                    raise RuntimeError(f"POST /api/v2/pools: {answer.status_code} {answer.text[:500]}")
                time.sleep(1 + attempt)
            if answer.status_code == 409:
                self.request("PATCH", f"/api/v2/pools/{name}", json=body)

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/v2/dags/{dag_id}/dagRuns", limit=100, order_by="logical_date")["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"])

    # --- what happened -----------------------------------------------------------------

    def log_tails(self, lines: int = 40) -> str:
        """The last ``lines`` lines of each component's log, and of the task logs that mention an error."""
        parts = [f"----- {c.name} ({c.log}) -----\n{_tail(_read(c.log), lines)}" for c in self.components.values()]
        task_logs = Path(self.env.get("AIRFLOW__LOGGING__BASE_LOG_FOLDER", self.workdir / "logs"))
        for log in sorted(task_logs.glob("dag_id=*/**/*.log")):
            text = _read(log)
            if '"level":"error"' in text or "Traceback" in text:
                parts.append(f"----- task log {log.relative_to(task_logs)} -----\n{_tail(text, lines)}")
        return "\n".join(parts)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)  # the group id is the leader's pid (start_new_session)


def _cpu(process: Any) -> float:
    """CPU seconds of ``process`` and of its children that have finished."""
    try:
        times = process.cpu_times()
    except Exception:  # psutil.Error: gone meanwhile
        return 0.0
    return float(times.user + times.system + times.children_user + times.children_system)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as error:
        return f"<{error}>"


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


@contextmanager
def airflow_components(env: Mapping[str, str], workdir: Path, **settings: Any) -> Iterator[AirflowComponents]:
    """Migrate ``env``'s metadata database, then :meth:`AirflowComponents.running`."""
    airflow = AirflowComponents(env, workdir, **settings)
    airflow.cli("db", "migrate")
    with airflow.running() as running:
        yield running

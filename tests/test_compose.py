"""docker-compose.yaml, Dockerfile and .env.example, checked offline (no Docker engine needed).

The compose file is validated against the compose-spec JSON schema with check-jsonschema
(requirements-dev.txt); the rest are consistency checks between the deployment files and the repo.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

#: bind-mount sources that Docker Compose creates itself on `up` (short volume syntax creates a
#: missing host directory); git-ignored, written by Airflow (task logs, airflow.cfg)
CREATED_BY_COMPOSE = {"./logs", "./config"}
#: the pools airflow-init creates, with their slots
POOLS = {"strava_api": 1, "google_health_api": 2}
#: Compose interpolation: `$$` is an escaped dollar; `${VAR...}` and `$VAR` are variables
INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)|\$([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the <<: *airflow-common merges


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_example() -> dict[str, str]:
    """The active (uncommented) assignments in .env.example, quotes removed."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", line.strip())
        if match:
            name, value = match.groups()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[name] = value
    return values


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    assert CHECK_JSONSCHEMA.exists(), f"{CHECK_JSONSCHEMA} missing: pip install -r requirements-dev.txt"
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True, timeout=120,
    )


# ------------------------------------------------------------------------------------------ schema


def test_compose_file_matches_the_compose_spec() -> None:
    result = check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("original", "broken", "complaint"),
    [
        ("    command: scheduler\n", "    command: scheduler\n    helthcheck: {}\n", "helthcheck"),
        ("condition: service_completed_successfully", "condition: service_completed", "service_completed"),
    ],
    ids=["unknown-service-key", "bad-depends-on-condition"],
)
def test_schema_check_rejects_a_broken_copy(tmp_path: Path, original: str, broken: str, complaint: str) -> None:
    """The validation above can fail: a typo in a service is caught."""
    text = COMPOSE.read_text()
    assert original in text
    bad = tmp_path / "docker-compose.yaml"
    bad.write_text(text.replace(original, broken, 1))
    result = check_jsonschema(bad)
    assert result.returncode != 0
    assert complaint in result.stdout + result.stderr


# ----------------------------------------------------------------------------------- consistency


def test_mounted_host_paths_exist(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    sources = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith((".", "/")):
                sources.add(source)
            else:
                assert source in (compose.get("volumes") or {}), f"{name}: named volume {source} not declared"
    assert sources >= CREATED_BY_COMPOSE
    assert {"./dags", "./plugins", "./include", "./devtools"} <= sources
    for source in sorted(sources - CREATED_BY_COMPOSE):
        assert source.startswith("./"), f"{source}: mount repo paths relative to docker-compose.yaml"
        assert (REPO / source).exists(), f"{source} is mounted but does not exist in the repo"


def test_every_variable_is_documented_in_env_example() -> None:
    variables = {a or b for a, b in INTERPOLATION.findall(COMPOSE.read_text()) if a or b}
    assert {"AIRFLOW_UID", "AIRFLOW_CONN_FITNESS_DB", "AIRFLOW_CONN_STRAVA_DEFAULT"} <= variables
    documented = set(re.findall(r"^[ \t]*(?:#[ \t]*)?([A-Za-z_][A-Za-z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert variables - documented == set(), "referenced in docker-compose.yaml, missing from .env.example"


def test_copied_env_example_sets_every_variable_without_a_default() -> None:
    """`cp .env.example .env` is enough for `docker compose config`: no ${VAR:?} error, no unset ${VAR}."""
    text = COMPOSE.read_text()
    required = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?\?[^}]*)?\}", text))
    assert {"AIRFLOW_JWT_SECRET", "AIRFLOW_CONN_FITBIT_DEFAULT"} <= required
    active = env_example()
    assert {name for name in required if not active.get(name)} == set()


def test_interpolation_regex_skips_escaped_dollars() -> None:
    found = [a or b for a, b in INTERPOLATION.findall('$${HOSTNAME} $$(id -u) ${A:-x} $B "${C:?msg}"')]
    assert [name for name in found if name] == ["A", "B", "C"]


def test_depends_on_targets_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target in service.get("depends_on", {}):
            assert target in services, f"{name} depends on unknown service {target}"


def test_profiles(services: dict[str, dict[str, Any]]) -> None:
    profiles = {name: set(service.get("profiles", [])) for name, service in services.items()}
    assert profiles["emulator"] == {"emulator"}
    assert profiles["receiver"] == {"webhooks"}
    receiver = services["receiver"]
    assert receiver["command"][:5] == ["python", "-m", "uvicorn", "--factory", "fitness_pipeline.receiver:create_app"]
    assert "--no-access-log" in receiver["command"]  # the handshake's verify token is a query parameter
    assert all(port.startswith("127.0.0.1:") for port in receiver["ports"])  # only the reverse proxy reaches it
    assert profiles["redis"] == profiles["airflow-worker"] == {"celery"}
    default = {name for name, p in profiles.items() if not p}
    assert default == {"postgres", "airflow-init", "airflow-apiserver", "airflow-scheduler",
                       "airflow-dag-processor", "airflow-triggerer"}
    command = services["emulator"]["command"]
    assert command[:3] == ["python", "-m", "fitness_emulator"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "8081"
    assert "/opt/airflow/devtools" in services["emulator"]["environment"]["PYTHONPATH"].split(":")


def test_airflow_environment(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].split("@")[1].startswith("postgres/")
    assert (env["AIRFLOW__CORE__LOAD_EXAMPLES"], env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"]) == ("false", "true")
    assert env["PYTHONPATH"].split(":") == ["/opt/airflow/plugins"]  # no tooling on the path
    for conn in ("AIRFLOW_CONN_FITNESS_DB", "AIRFLOW_CONN_STRAVA_DEFAULT", "AIRFLOW_CONN_FITBIT_DEFAULT"):
        assert env[conn].startswith(f"${{{conn}"), conn
    for name, service in services.items():
        if name.startswith("airflow-"):
            assert service["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW__API_AUTH__JWT_SECRET"]
            assert "_PIP_ADDITIONAL_REQUIREMENTS" not in service["environment"], "no pip install at start-up"
    assert "/docker-entrypoint-initdb.d" in " ".join(services["postgres"]["volumes"])


def test_env_example_connections_reach_the_compose_stack() -> None:
    """The default .env (a copy of .env.example) talks to compose's postgres and the emulator."""
    from fitness_emulator.google import GoogleSettings
    from fitness_emulator.strava import StravaSettings

    env = env_example()
    db = json.loads(env["AIRFLOW_CONN_FITNESS_DB"])
    assert (db["conn_type"], db["host"], db["schema"]) == ("postgres", "postgres", "fitness")
    assert (db["login"], db["password"]) == (env["FITNESS_DB_USER"], env["FITNESS_DB_PASSWORD"])
    strava = json.loads(env["AIRFLOW_CONN_STRAVA_DEFAULT"])
    assert strava["conn_type"] == "strava" and strava["host"] == "http://emulator:8081"
    settings = StravaSettings()
    assert (strava["login"], strava["password"], strava["extra"]["refresh_token"]) == (
        settings.client_id, settings.client_secret, settings.initial_refresh_token)
    fitbit = json.loads(env["AIRFLOW_CONN_FITBIT_DEFAULT"])
    assert fitbit["conn_type"] == "fitbit" and fitbit["host"] == "http://emulator:8081"
    assert fitbit["extra"]["refresh_url"] == "http://emulator:8081/token"
    google = GoogleSettings()
    assert (fitbit["login"], fitbit["password"], fitbit["extra"]["refresh_token"]) == (
        google.client_id, google.client_secret, google.initial_refresh_token)


def test_dockerfile_matches_the_pins() -> None:
    base = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.M)
    assert base, "no FROM line"
    match = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)", base.group(1))
    assert match, f"unexpected base image {base.group(1)}"
    pinned = re.search(r"^apache-airflow==(\S+)", (REPO / "requirements.txt").read_text(), re.M)
    assert pinned
    assert match.group(1) == pinned.group(1)
    assert match.group(2) == "3.11"


def test_init_creates_the_pools(services: dict[str, dict[str, Any]]) -> None:
    command = services["airflow-init"]["command"]
    script = command if isinstance(command, str) else "\n".join(command)
    pools = {name: int(slots) for name, slots in re.findall(r"airflow pools set\s+(\S+)\s+(\d+)", script)}
    assert pools == POOLS


def test_init_pools_match_pools_json(services: dict[str, dict[str, Any]]) -> None:
    """The compose stack and `make demo` (include/pools.json) create the same pools."""
    pools_json = REPO / "include" / "pools.json"
    if not pools_json.exists():
        pytest.skip("no include/pools.json")
    command = "\n".join(services["airflow-init"]["command"])
    created = {name: (int(slots), description)
               for name, slots, description in re.findall(r'airflow pools set (\S+) (\d+) "([^"]*)"', command)}
    assert created == {name: (pool["slots"], pool["description"])
                       for name, pool in json.loads(pools_json.read_text()).items()}

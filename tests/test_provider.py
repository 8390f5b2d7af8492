"""The provider entry point: connection types ``strava`` and ``fitbit`` with declarative UI forms.

Needs the distribution installed (``python -m pip install --no-deps -e .``, which ``make test`` does):
these tests fail, on purpose, when it is not.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import airflow
import pytest

import fitness_pipeline
from fitness_pipeline import provider

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_PACKAGE = Path(airflow.__file__ or "").parent
HOOKS = {"strava": "fitness_pipeline.hooks.strava.StravaHook", "fitbit": "fitness_pipeline.hooks.fitbit.FitbitHook"}
API_ROOTS = {"strava": "https://www.strava.com", "fitbit": "https://health.googleapis.com"}
NOT_INSTALLED = ("the distribution fitness-pipeline is not installed, so Airflow sees no provider and "
                 "no connection types strava/fitbit: run `.venv/bin/python -m pip install --no-deps -e .` "
                 "(make test does)")


def distribution() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution("fitness-pipeline")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(NOT_INSTALLED)


def test_installed_distribution_declares_the_entry_point() -> None:
    dist = distribution()
    entry_points = [ep for ep in dist.entry_points if ep.group == "apache_airflow_provider"]
    assert [ep.value for ep in entry_points] == ["fitness_pipeline.provider:get_provider_info"]
    info = entry_points[0].load()()
    # Airflow raises at discovery when these differ (canonicalized distribution name)
    assert info["package-name"] == dist.metadata["Name"].lower().replace("_", "-") == "fitness-pipeline"
    assert dist.version == fitness_pipeline.__version__ == info["versions"][0]
    # editable: the module Airflow loads is this checkout's, not a stale copy
    assert Path(provider.__file__).resolve() == REPO / "plugins" / "fitness_pipeline" / "provider.py"


def test_provider_info_is_valid_for_airflow_schemas() -> None:
    import jsonschema

    info = provider.get_provider_info()
    runtime = json.loads((AIRFLOW_PACKAGE / "provider_info.schema.json").read_text())
    jsonschema.validate(info, runtime)
    # the stricter provider.yaml schema knows conn-fields / ui-field-behaviour (additionalProperties: false)
    strict = json.loads((AIRFLOW_PACKAGE / "provider.yaml.schema.json").read_text())
    jsonschema.validate(info["connection-types"], strict["properties"]["connection-types"])
    assert {c["connection-type"]: c["hook-class-name"] for c in info["connection-types"]} == HOOKS


@pytest.mark.parametrize("conn_type", sorted(HOOKS))
def test_form_names_the_hooks_current_defaults(conn_type: str) -> None:
    from fitness_pipeline.hooks.base import DEFAULT_TOKEN_STORE_CONN_ID, HttpSettings

    info = {c["connection-type"]: c for c in provider.get_provider_info()["connection-types"]}[conn_type]
    fields = info["conn-fields"]
    for name, spec in HttpSettings.__dataclass_fields__.items():
        if name == "credential_store_conn_id":
            assert f"Default: {DEFAULT_TOKEN_STORE_CONN_ID}." in fields[name]["description"]
        else:
            assert fields[name]["description"].endswith(f"Empty: the hook's default, {spec.default:g}."), name


def test_airflow_cli_lists_both_connection_types() -> None:
    distribution()
    result = subprocess.run([sys.executable, "-m", "airflow", "providers", "hooks", "-o", "json"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    hooks = {hook["connection_type"]: hook for hook in json.loads(result.stdout)}
    for conn_type, hook_class in HOOKS.items():
        assert hooks.get(conn_type, {}).get("class") == hook_class, NOT_INSTALLED
        assert hooks[conn_type]["package_name"] == "fitness-pipeline"
        assert hooks[conn_type]["conn_id_attribute_name"] == f"{conn_type}_conn_id"
    assert hooks["fitbit"]["hook_name"] == "Fitbit (Google Health API)"


def _ui_metadata() -> dict[str, Any]:
    """What the UI's connection form is drawn from (GET /ui/connections/hook_meta)."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    return {meta.connection_type: meta.model_dump() for meta in HookMetaService.hook_meta_data()}


@pytest.mark.parametrize("conn_type", sorted(HOOKS))
def test_connection_form_in_the_ui(conn_type: str) -> None:
    distribution()
    from airflow.providers_manager import ProvidersManager

    meta = _ui_metadata().get(conn_type)
    assert meta is not None, NOT_INSTALLED
    assert meta["hook_class_name"] == HOOKS[conn_type]
    standard = meta["standard_fields"]
    assert (standard["login"]["title"], standard["password"]["title"], standard["host"]["title"]) == (
        "Client ID", "Client secret", "API root")
    assert standard["host"]["placeholder"] == API_ROOTS[conn_type]
    assert standard["url_schema"]["hidden"] and standard["port"]["hidden"]
    assert not standard["host"]["hidden"] and not standard["password"]["hidden"]

    extra = meta["extra_fields"]
    assert extra["refresh_token"]["schema"]["title"] == "Refresh token"
    assert extra["refresh_token"]["schema"]["format"] == "password"  # masked input
    assert extra["refresh_url"]["schema"]["title"] == "Token endpoint"
    assert extra["credential_store_conn_id"]["schema"]["title"] == "Token store connection"
    # renamed: Airflow hides the values of extras whose name contains "token" (tests/test_hook_extras.py)
    assert "token_url" not in extra and "token_store_conn_id" not in extra
    assert extra["max_retries"]["schema"]["type"] == ["integer", "null"]
    # nothing pre-filled: an empty field means the hook's default, which may change with the code
    assert all(field["value"] is None for field in extra.values())
    if conn_type == "strava":
        assert "rate_limit_window_seconds" in extra

    widgets = ProvidersManager().connection_form_widgets
    assert widgets[f"extra__{conn_type}__refresh_token"].is_sensitive
    assert not widgets[f"extra__{conn_type}__refresh_url"].is_sensitive
    assert widgets[f"extra__{conn_type}__refresh_token"].package_name == "fitness-pipeline"


@pytest.mark.slow
def test_connections_add_keeps_the_type(airflow_db: None) -> None:
    """Without the provider, `airflow connections add --conn-type strava` silently stores `generic`.
    (The metadata database is the test session's own: nothing to clean up.)"""
    distribution()
    conn_id = "provider_test_strava"

    def airflow(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "airflow", *args], capture_output=True, text=True,
                              timeout=120, check=False)

    added = airflow("connections", "add", conn_id, "--conn-type", "strava", "--conn-host", "https://www.strava.com",
                    "--conn-login", "12345")
    assert added.returncode == 0, added.stderr[-2000:]
    assert "generic" not in added.stdout + added.stderr, added.stderr[-2000:]
    got = airflow("connections", "get", conn_id, "-o", "json")
    assert got.returncode == 0, got.stderr[-2000:]
    assert json.loads(got.stdout)[0]["conn_type"] == "strava"

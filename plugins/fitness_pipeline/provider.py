"""Airflow provider metadata: the connection types ``strava`` and ``fitbit`` and their UI forms.

Airflow finds this through the ``apache_airflow_provider`` entry point of the ``fitness-pipeline``
distribution (``pip install --no-deps -e .``, see pyproject.toml); a plugin cannot add connection
types. The forms are declarative (``conn-fields`` and ``ui-field-behaviour``, Airflow 3.2+): no
hook is imported to draw them, and the hooks define no ``get_connection_form_widgets()`` /
``get_ui_field_behaviour()`` (deprecated since 3.2).

This module is loaded by every Airflow process that lists providers: it imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

from fitness_pipeline import __version__, apis

#: must equal the distribution name in pyproject.toml, or Airflow refuses the provider
PACKAGE_NAME = "fitness-pipeline"


def _string(label: str, description: str, *, secret: bool = False, url: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if secret:
        schema["format"] = "password"  # masked in the form; Airflow marks the field sensitive
    elif url:
        schema["format"] = "url"
    return {"label": label, "description": description, "schema": schema}


def _number(label: str, description: str, default: float, *, integer: bool = False,
            minimum: float = 0) -> dict[str, Any]:
    """An optional number. The hook's default is only named in the description, not pre-filled: a form
    default would be written into every connection's extra and outlive a change of the hook's default."""
    kind = "integer" if integer else "number"
    return {"label": label, "description": f"{description} Empty: the hook's default, {default:g}.",
            "schema": {"type": [kind, "null"], "minimum": minimum}}


def _http_fields() -> dict[str, Any]:
    """The :class:`~fitness_pipeline.hooks.base.HttpSettings` extras (tests check the defaults named here)."""
    return {
        "connect_timeout": _number("Connect timeout (s)", "Seconds to wait for a TCP connection.", 10),
        "read_timeout": _number("Read timeout (s)", "Seconds to wait for a response.", 60),
        "max_retries": _number("Max retries", "Retries of connection errors, timeouts and 5xx (exponential "
                               "backoff with jitter).", 5, integer=True),
        "backoff_factor": _number("Backoff factor (s)", "First retry wait; doubles per retry.", 1),
        "max_rate_limit_wait": _number(
            "Max rate-limit wait (s)", "Longest wait for a rate limit to reset inside a task; a longer one "
            "raises RateLimitError and the DAG reschedules the task.", 60),
        "max_pages": _number(
            "Max pages", "Most requests one listing sends; more fail the task as a server paging in a loop.",
            10_000, integer=True, minimum=1),
        # No name here but refresh_token contains a word Airflow deems sensitive ("token", "secret", ...): the
        # value of such an extra shows as *** in the form and in task logs (the former token_store_conn_id and
        # token_url did). tests/test_provider.py checks the names against Airflow's own masker.
        "credential_store_conn_id": _string(
            "Token store connection", "Default: fitness_db. Postgres connection holding the table oauth_token "
            "(the newest tokens, refreshed under a row lock). 'memory': tokens in the process only (tests). "
            "Formerly token_store_conn_id (still read)."),
    }


def _behaviour(api_root: str, client: str) -> dict[str, Any]:
    return {
        "hidden-fields": ["schema", "port"],
        "relabeling": {"login": "Client ID", "password": "Client secret", "host": "API root"},
        "placeholders": {"login": f"{client} client id", "password": f"{client} client secret", "host": api_root},
    }


def _strava() -> dict[str, Any]:
    return {
        "connection-type": "strava",
        "hook-class-name": "fitness_pipeline.hooks.strava.StravaHook",
        "hook-name": "Strava",
        "conn-fields": {
            "refresh_token": _string(
                "Refresh token", f"From `python -m fitness_pipeline.authorize strava` (scope {apis.STRAVA.scope}). "
                "Only seeds the token store: Strava rotates refresh tokens, the newest live in oauth_token.",
                secret=True),
            "refresh_url": _string("Token endpoint", "OAuth token URL the refresh token is exchanged at. "
                                   f"Default: <API root>{apis.STRAVA.token_path}. Formerly token_url (still read).",
                                   url=True),
            "rate_limit_window_seconds": _number(
                "Rate-limit window (s)", "Length of Strava's short rate-limit window.",
                apis.STRAVA_RATE_LIMIT_WINDOW_SECONDS, integer=True, minimum=1),
            **_http_fields(),
        },
        "ui-field-behaviour": _behaviour(apis.STRAVA.default_host, "Strava API application"),
    }


def _fitbit() -> dict[str, Any]:
    return {
        "connection-type": "fitbit",
        "hook-class-name": "fitness_pipeline.hooks.fitbit.FitbitHook",
        "hook-name": "Fitbit (Google Health API)",
        "conn-fields": {
            "refresh_token": _string(
                "Refresh token", "From `python -m fitness_pipeline.authorize fitbit` (access_type=offline, both "
                "googlehealth scopes).", secret=True),
            "refresh_url": _string("Token endpoint", "OAuth token URL the refresh token is exchanged at. "
                                   f"Default: {apis.GOOGLE_HEALTH.default_token_url()}. Formerly token_url (still "
                                   "read).",
                                   url=True),
            **_http_fields(),
        },
        "ui-field-behaviour": _behaviour(apis.GOOGLE_HEALTH.default_host, "Google OAuth"),
    }


def get_provider_info() -> dict[str, Any]:
    """The provider dict Airflow reads (``airflow/provider_info.schema.json``, Airflow 3.3)."""
    return {
        "package-name": PACKAGE_NAME,
        "name": "Fitness pipeline",
        "description": "Strava and Fitbit (Google Health API v4) hooks of the fitness-pipeline DAG package.",
        "versions": [__version__],
        "connection-types": [_strava(), _fitbit()],
    }

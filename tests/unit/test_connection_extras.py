"""Connection extras of both hooks: the names Airflow would hide (``token_url``, ``token_store_conn_id``:
"token" is one of its secrets masker's sensitive words) are renamed ``refresh_url`` and
``credential_store_conn_id``; the old names are still read, with a warning that names no value.

No emulator here: connections come from ``AIRFLOW_CONN_*`` variables (Airflow's own lookup); the
end-to-end refresh under an old name is in tests/test_hook_extras.py."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import pytest

from fitness_pipeline import provider
from fitness_pipeline.hooks import StravaHook
from fitness_pipeline.hooks.base import RENAMED_EXTRAS, current_extra
from fitness_pipeline.hooks.fitbit import FitbitHook
from fitness_pipeline.tokens import MemoryTokenStore, PostgresTokenStore

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
TOKEN_URL = "https://login.example.test/oauth/token"
OTHER_URL = "https://old.example.test/token"
HOOKS = {"strava": StravaHook, "fitbit": FitbitHook}


def airflow_maskers() -> dict[str, Any]:
    """Airflow's own decision whether an extra's value is hidden: the API server's (connection form and
    REST API) and the task SDK's (task logs), both configured by Airflow from its settings at import."""
    import airflow.settings  # noqa: F401 - configures both maskers (sensitive words, [core] settings)

    try:
        from airflow._shared.secrets_masker import redact, should_hide_value_for_key
        from airflow.sdk._shared.secrets_masker import should_hide_value_for_key as sdk_should_hide
    except ImportError:  # Airflow 2
        from airflow.utils.log.secrets_masker import redact, should_hide_value_for_key
        sdk_should_hide = should_hide_value_for_key
    return {"api": should_hide_value_for_key, "task": sdk_should_hide, "redact": redact}


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_type: str, **extra: Any) -> None:
    conn = {"conn_type": conn_type, "host": "https://api.example.test", "login": "client-id",
            "password": "client-secret", "extra": {"refresh_token": "seed-refresh-token", **extra}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_type.upper()}_DEFAULT", json.dumps(conn))


def logged_text(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return caplog.text + captured.out + captured.err  # Airflow 3 hooks log through structlog to stdout


@pytest.mark.parametrize(("new", "old"), sorted(RENAMED_EXTRAS.items()))
def test_new_names_are_not_masked_by_airflow_and_the_old_ones_were(new: str, old: str) -> None:
    maskers = airflow_maskers()
    for where in ("api", "task"):
        assert not maskers[where](new), f"Airflow's {where} masker hides {new!r}"
        assert maskers[where](old), f"{old!r} is no longer hidden by Airflow: the rename was not needed"
        assert maskers[where]("refresh_token")  # the refresh token stays hidden
    # what the connection's REST API / form returns: the new value readable, the refresh token not
    extra = {new: "https://visible.example.test", old: "https://visible.example.test", "refresh_token": "r" * 20}
    assert maskers["redact"](extra) == {new: "https://visible.example.test", old: "***", "refresh_token": "***"}


def test_no_form_field_but_the_refresh_token_is_masked() -> None:
    should_hide = airflow_maskers()["api"]
    for conn_type in provider.get_provider_info()["connection-types"]:
        hidden = [name for name in conn_type["conn-fields"] if should_hide(name)]
        assert hidden == ["refresh_token"], conn_type["connection-type"]


@pytest.mark.parametrize("conn_type", sorted(HOOKS))
@pytest.mark.parametrize("names", ["new", "old"])
def test_old_and_new_names_both_work(conn_type: str, names: str, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    extra = {"refresh_url": TOKEN_URL, "credential_store_conn_id": "other_db"}
    if names == "old":
        extra = {RENAMED_EXTRAS[name]: value for name, value in extra.items()}
    set_connection(monkeypatch, conn_type, **extra)
    caplog.set_level(logging.WARNING)
    capsys.readouterr()
    hook = HOOKS[conn_type]()
    assert hook.token_url == TOKEN_URL
    assert hook.settings.credential_store_conn_id == "other_db"
    assert isinstance(hook.token_store, PostgresTokenStore) and hook.token_store.postgres_conn_id == "other_db"
    logged = logged_text(caplog, capsys)
    if names == "new":
        assert "deprecated" not in logged
    else:
        for new, old in RENAMED_EXTRAS.items():
            assert f"the extra '{old}' is deprecated, rename it '{new}'" in logged
        assert TOKEN_URL not in logged and "other_db" not in logged  # names only, never a value


@pytest.mark.parametrize("conn_type", sorted(HOOKS))
def test_the_new_name_wins_when_both_are_set(conn_type: str, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    set_connection(monkeypatch, conn_type, refresh_url=TOKEN_URL, token_url=OTHER_URL,
                   credential_store_conn_id="memory", token_store_conn_id="fitness_db")
    caplog.set_level(logging.WARNING)
    capsys.readouterr()
    hook = HOOKS[conn_type]()
    assert hook.token_url == TOKEN_URL
    assert hook.settings.credential_store_conn_id is None
    assert isinstance(hook.token_store, MemoryTokenStore)
    logged = logged_text(caplog, capsys)
    assert "the extra 'token_url' is deprecated" in logged and "ignored" in logged
    assert OTHER_URL not in logged


def test_an_empty_new_field_does_not_hide_a_value_under_the_old_name() -> None:
    """A form saved with the new field left empty keeps using the value under the old name."""
    assert current_extra({"refresh_url": "", "token_url": TOKEN_URL})["refresh_url"] == TOKEN_URL
    assert current_extra({"credential_store_conn_id": None, "token_store_conn_id": "x"}) == {
        "credential_store_conn_id": "x"}


def test_defaults_without_either_name(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "strava")
    set_connection(monkeypatch, "fitbit")
    assert StravaHook().token_url == "https://api.example.test/oauth/token"
    assert FitbitHook().token_url == "https://oauth2.googleapis.com/token"
    assert StravaHook().settings.credential_store_conn_id == FitbitHook().settings.credential_store_conn_id == (
        "fitness_db")

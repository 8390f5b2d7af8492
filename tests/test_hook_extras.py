"""Connection extras end to end: a connection written with the deprecated names still refreshes at its
token endpoint. The pure rules of the renamed extras are in tests/unit/test_connection_extras.py."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from fitness_devtools.embedded_stack import emulator_connection_env
from fitness_pipeline.hooks.fitbit import FitbitHook
from fitness_pipeline.tokens import MemoryTokenStore

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def test_a_fitbit_connection_with_the_old_names_still_refreshes_at_its_token_url(
        make_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: the emulator's token endpoint only under ``token_url`` (the default is Google's real one)."""
    emulator = make_emulator()
    conn = json.loads(emulator_connection_env(emulator.url, "fitbit", backoff_factor=0.05,
                                              token_store_conn_id="memory"))
    conn["extra"]["token_url"] = conn["extra"].pop("refresh_url")
    monkeypatch.setenv("AIRFLOW_CONN_FITBIT_DEFAULT", json.dumps(conn))
    hook = FitbitHook()
    assert hook.list_samples("weight", NOW - dt.timedelta(days=7), NOW) is not None
    assert isinstance(hook.token_store, MemoryTokenStore)
    assert emulator.stats()["google_token_refreshes"] == 1

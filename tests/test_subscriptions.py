"""``python -m fitness_pipeline.subscriptions strava ...`` end to end: the emulator's push-subscription API
behind connection ``strava_default``, and the real receiver (under uvicorn, on a test database) answering
Strava's validation handshake."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from fitness_devtools.embedded_stack import emulator_connection_env
from fitness_emulator.strava_push import FIRST_SUBSCRIPTION_ID
from fitness_pipeline.db import transaction
from fitness_pipeline.subscriptions import main
from tests.helpers import query, serve_app

SECRET = "demo-client-secret"
STRAVA_ATHLETE = 28416793  # the emulator's default athlete


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@contextmanager
def receiver(verify_token: str, subscription_id: int | None = FIRST_SUBSCRIPTION_ID) -> Iterator[str]:
    """The real receiver on ``fitness_db``; yields its Strava callback URL."""
    from fitness_pipeline.receiver import ReceiverSettings, create_app

    settings = ReceiverSettings(strava_verify_token=verify_token, strava_subscription_id=subscription_id)
    with serve_app(create_app(settings)) as url:
        yield f"{url}/strava"


@pytest.fixture
def emulator(connect_strava: Callable[..., Any], schema: Any) -> Any:
    """An emulator behind ``strava_default``; the fitness schema with the default athlete's Strava id."""
    with transaction(schema) as cur:
        cur.execute("UPDATE athlete SET strava_athlete_id = %s WHERE id = 1", (STRAVA_ATHLETE,))
    return connect_strava()


def subscriptions_of(emulator: Any) -> list[dict[str, Any]]:
    return requests.get(f"{emulator.url}/api/v3/push_subscriptions", timeout=10,
                        params={"client_id": "demo-client-id", "client_secret": SECRET}).json()


def test_token_create_show_delete_and_an_event_on_its_way(emulator: Any, schema: Any) -> None:
    code, out, err = run("strava", "token")
    assert code == 0 and out.startswith("FITNESS_STRAVA_VERIFY_TOKEN=") and "create" in err
    token = out.strip().split("=", 1)[1]
    assert len(token) >= 43

    with receiver(token) as callback:
        code, out, err = run("strava", "create", "--callback-url", callback, "--verify-token", token)
        assert code == 0, err
        assert out.splitlines() == [f"FITNESS_STRAVA_SUBSCRIPTION_ID={FIRST_SUBSCRIPTION_ID}",
                                    f"FITNESS_STRAVA_VERIFY_TOKEN={token}"]
        assert "strava_default" in err and SECRET not in out + err
        assert [s["callback_url"] for s in subscriptions_of(emulator)] == [callback]

        code, out, _ = run("strava", "show")
        assert code == 0 and out.split("\t")[:2] == [str(FIRST_SUBSCRIPTION_ID), callback]

        # the subscription works: an upload reaches the receiver's table
        requests.post(f"{emulator.url}/_emulator/strava/activities", json={"start_date": "2026-12-01T07:00:00Z"},
                      timeout=10).raise_for_status()
        log = requests.get(f"{emulator.url}/_emulator/strava/push", params={"wait": 10}, timeout=20).json()["log"]
        assert [entry["delivered"] for entry in log] == [True]
    (payload,) = [json.loads(p) for (p,) in query(schema, "SELECT payload FROM webhook_event")]
    assert payload["aspect_type"] == "create" and payload["subscription_id"] == FIRST_SUBSCRIPTION_ID

    code, out, err = run("strava", "delete")
    assert code == 0 and f"Deleted subscription {FIRST_SUBSCRIPTION_ID}" in out and SECRET not in out + err
    assert subscriptions_of(emulator) == []
    code, out, err = run("strava", "show")
    assert code == 0 and out == "" and "No push subscription" in err
    assert run("strava", "delete")[0] == 0  # nothing to delete


def test_the_verify_token_comes_from_the_receivers_variable(emulator: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FITNESS_STRAVA_VERIFY_TOKEN", "from-the-environment-" + "e" * 20)
    with receiver("from-the-environment-" + "e" * 20) as callback:
        code, out, err = run("strava", "create", "--callback-url", callback)
    assert code == 0, err
    assert out.splitlines()[1] == "FITNESS_STRAVA_VERIFY_TOKEN=from-the-environment-" + "e" * 20


def test_a_callback_that_does_not_answer_the_challenge_is_explained(emulator: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FITNESS_STRAVA_VERIFY_TOKEN", raising=False)
    with receiver("the-receivers-own-token-" + "r" * 20) as callback:
        code, out, err = run("strava", "create", "--callback-url", callback, "--verify-token", "another-one")
        assert code == 1 and out == ""
        assert "could not validate the callback" in err and "reachable at that public HTTPS URL" in err
        assert "FITNESS_STRAVA_VERIFY_TOKEN" in err and "no subscription was created" in err
        # no token given: one is generated, which the receiver cannot know
        code, out, err = run("strava", "create", "--callback-url", callback)
        assert code == 1 and "generated just now" in err and "strava token" in err
    assert subscriptions_of(emulator) == []

    # nothing listens at the callback (the receiver is stopped)
    code, _, err = run("strava", "create", "--callback-url", callback, "--verify-token", "another-one")
    assert code == 1 and "could not validate the callback" in err and SECRET not in err


def test_a_second_subscription_is_refused_with_what_to_do(emulator: Any) -> None:
    with receiver("t" * 43) as callback:
        assert run("strava", "create", "--callback-url", callback, "--verify-token", "t" * 43)[0] == 0
        code, _, err = run("strava", "create", "--callback-url", callback, "--verify-token", "t" * 43)
    assert code == 1 and "already has a push subscription" in err and "strava delete" in err


def test_wrong_client_credentials_name_the_connection_and_never_the_secret(
        connect_strava: Callable[..., Any], make_emulator: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = make_emulator()
    env = json.loads(emulator_connection_env(emulator.url))
    env["password"] = "a-wrong-secret-value"
    monkeypatch.setenv("AIRFLOW_CONN_STRAVA_DEFAULT", json.dumps(env))
    for argv in (["show"], ["create", "--callback-url", "https://hooks.example.org/strava", "--verify-token", "x"],
                 ["delete", "--id", "1"]):
        code, out, err = run("strava", *argv)
        assert code == 1 and "(401)" in err and "'strava_default'" in err and "client secret" in err
        assert "a-wrong-secret-value" not in out + err


def test_other_errors(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run("strava", "delete", "--id", "99")
    assert code == 1 and "no subscription 99" in err and "strava show" in err
    code, _, err = run("strava", "create", "--callback-url", "https://x.example/" + "a" * 300, "--verify-token", "t")
    assert code == 1 and "at most 255" in err
    code, _, err = run("strava", "create", "--callback-url", "hooks.example.org/strava", "--verify-token", "t")
    assert code == 1 and "not an http(s) URL" in err
    code, _, err = run("strava", "show", "--conn-id", "no_such_connection")
    assert code == 1 and "'no_such_connection' cannot be read" in err
    # the API unreachable: the host of the connection is named, not the URL with its secret query
    env = json.loads(os.environ["AIRFLOW_CONN_STRAVA_DEFAULT"])
    env["host"] = "http://127.0.0.1:9"
    monkeypatch.setenv("AIRFLOW_CONN_STRAVA_DEFAULT", json.dumps(env))
    code, _, err = run("strava", "show")
    assert code == 1 and "could not be reached at http://127.0.0.1:9" in err and SECRET not in err


def test_the_module_runs_as_a_command() -> None:
    done = subprocess.run([sys.executable, "-m", "fitness_pipeline.subscriptions", "strava", "token"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.startswith("FITNESS_STRAVA_VERIFY_TOKEN=") and len(done.stdout.strip()) > 60

"""``python -m fitness_pipeline.authorize`` against the emulator: the test plays the browser.

The command runs as a subprocess (as a user runs it); ``requests`` follows the consent URL, whose
302 lands on the command's loopback server; the printed connection is then used by the real hooks.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from fitness_pipeline import authorize
from fitness_pipeline.hooks import AuthorizationError
from fitness_pipeline.hooks import fitbit as fitbit_hook
from fitness_pipeline.hooks.fitbit import FitbitHook
from fitness_pipeline.hooks.strava import StravaHook

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
STRAVA_SECRET = "demo-client-secret"
GOOGLE_SECRET = "demo-google-client-secret"


class Run:
    """One ``python -m fitness_pipeline.authorize`` process; stderr is read as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "fitness_pipeline.authorize", *argv],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.err_lines: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.put(line)
        self._lines.put(None)

    def consent_url(self, timeout: float = 20) -> str:
        while True:
            line = self._lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"exited before printing a URL: {''.join(self.err_lines)}")
            self.err_lines.append(line)
            if match := re.fullmatch(r"\s+(http://\S+)\s*", line):
                return match.group(1)

    def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        """(exit code, stdout, all of stderr)."""
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        while (line := self._lines.get_nowait()) is not None:
            self.err_lines.append(line)
        return code, out, "".join(self.err_lines)


@pytest.fixture
def run_authorize() -> Iterator[Callable[..., Run]]:
    """``run_authorize(service, emulator, *more_args)``: the command pointed at ``emulator``."""
    runs: list[Run] = []

    def start(service: str, emulator: Any, *args: str) -> Run:
        if service == "strava":
            urls = ["--client-id", "demo-client-id", "--authorize-url", f"{emulator.url}/oauth/authorize",
                    "--token-url", f"{emulator.url}/oauth/token"]
        else:
            urls = ["--client-id", "demo-google-client-id", "--authorize-url", f"{emulator.url}/o/oauth2/v2/auth",
                    "--token-url", f"{emulator.url}/token"]
        # the secrets come from the environment, as documented (not from argv, which `ps` shows)
        env = dict(os.environ, STRAVA_CLIENT_SECRET=STRAVA_SECRET, GOOGLE_CLIENT_SECRET=GOOGLE_SECRET)
        run = Run([service, *urls, "--api-root", emulator.url, "--no-browser", "--timeout", "20",
                   "--extra", "credential_store_conn_id=memory", "--extra", "backoff_factor=0.05", *args], env)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(10)


def query_of(url: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def printed_connection(out: str, conn_id: str) -> dict[str, Any]:
    """The AIRFLOW_CONN_<ID> line's JSON, checked equal to the `airflow connections add` command's."""
    env_name = f"AIRFLOW_CONN_{conn_id.upper()}"
    lines = [line for line in out.splitlines() if line.startswith(f"{env_name}=")]
    assert len(lines) == 1, out
    conn = json.loads(shlex.split(lines[0].split("=", 1)[1])[0])
    command = shlex.split(out[out.index("airflow connections add"):])
    assert command[:5] == ["airflow", "connections", "add", conn_id, "--conn-json"]
    assert json.loads(command[5]) == conn
    return dict(conn)


def assert_secrets_only_in_the_connection(out: str, err: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in err
        assert out.count(secret) == 2  # the env line and the --conn-json command, nothing else


# --------------------------------------------------------------------------- Strava


def test_strava_authorize_prints_a_working_connection(make_emulator: Any, run_authorize: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = make_emulator()
    run = run_authorize("strava", emulator)
    url = run.consent_url()
    params = query_of(url)
    assert url.startswith(f"{emulator.url}/oauth/authorize?")
    assert params["client_id"] == "demo-client-id"
    assert (params["response_type"], params["approval_prompt"], params["scope"]) == (
        "code", "force", "read,activity:read_all")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/callback", params["redirect_uri"])
    assert len(params["state"]) >= 24

    page = requests.get(url, timeout=10)  # the browser: consent → 302 → the command's loopback server
    assert page.status_code == 200 and urlsplit(page.url).path == "/callback"
    assert "Return to the terminal" in page.text
    code, out, err = run.finish()
    assert code == 0, err
    assert "WARNING" not in err and "granted scope: read,activity:read_all" in err

    conn = printed_connection(out, "strava_default")
    refresh_token = emulator.state.strava.tokens.refresh_token
    assert conn["conn_type"] == "strava" and conn["host"] == emulator.url
    assert (conn["login"], conn["password"]) == ("demo-client-id", STRAVA_SECRET)
    assert conn["extra"] == {"refresh_token": refresh_token, "credential_store_conn_id": "memory",
                             "backoff_factor": 0.05}
    assert_secrets_only_in_the_connection(out, err, STRAVA_SECRET, refresh_token)

    monkeypatch.setenv("AIRFLOW_CONN_STRAVA_DEFAULT", json.dumps(conn))
    activities = StravaHook().list_activities(NOW - dt.timedelta(days=120), NOW)
    assert activities and any(a["visibility"] == "only_me" for a in activities)  # activity:read_all granted


def test_strava_unticked_private_activities_warns(make_emulator: Any, run_authorize: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = make_emulator()
    # the athlete unticks "View data about your private activities": only `read` is left
    requests.post(f"{emulator.url}/_emulator/strava/consent", json={"scope": "read"}, timeout=5).raise_for_status()
    run = run_authorize("strava", emulator, "--conn-id", "strava_partial")
    requests.get(run.consent_url(), timeout=10).raise_for_status()
    code, out, err = run.finish()
    assert code == 0, err
    assert "granted scope: read\n" in err
    assert "WARNING: Strava granted only 'read', without activity:read_all" in err
    conn = printed_connection(out, "strava_partial")
    assert conn["description"].endswith("scope read")

    monkeypatch.setenv("AIRFLOW_CONN_STRAVA_PARTIAL", json.dumps(conn))
    with pytest.raises(AuthorizationError, match="lacks the activity:read scope"):  # the warning was right
        StravaHook("strava_partial").list_activities(NOW - dt.timedelta(days=7), NOW)


def test_state_mismatch_is_rejected_and_nothing_exchanged(make_emulator: Any, run_authorize: Any) -> None:
    emulator = make_emulator()
    run = run_authorize("strava", emulator)
    redirect = requests.get(run.consent_url(), allow_redirects=False, timeout=10)
    assert redirect.status_code == 302
    location = redirect.headers["Location"]
    forged = {**query_of(location), "state": "forged-by-another-site"}
    page = requests.get(f"{location.split('?')[0]}?{urlencode(forged)}", timeout=10)
    assert page.status_code == 400 and "state does not match" in page.text
    code, out, err = run.finish()
    assert code == 1
    assert "ERROR: The redirect's state does not match" in err
    assert out == "" and STRAVA_SECRET not in err
    assert emulator.stats()["token_requests"] == 0  # the code was never exchanged


@pytest.mark.parametrize("service", ["strava", "fitbit"])
def test_cancelled_consent(service: str, make_emulator: Any, run_authorize: Any) -> None:
    emulator = make_emulator()
    control = "strava" if service == "strava" else "google"
    requests.post(f"{emulator.url}/_emulator/{control}/consent", json={"deny": True}, timeout=5).raise_for_status()
    run = run_authorize(service, emulator)
    page = requests.get(run.consent_url(), timeout=10)
    assert page.status_code == 400 and "access_denied" in page.text
    code, out, err = run.finish()
    assert code == 1 and out == ""
    assert "error=access_denied (the consent was cancelled)" in err


def test_no_redirect_times_out(make_emulator: Any, run_authorize: Any) -> None:
    run = run_authorize("strava", make_emulator(), "--timeout", "0.5")
    run.consent_url()
    code, out, err = run.finish()
    assert code == 1 and out == ""
    assert "No redirect reached http://127.0.0.1:" in err


# --------------------------------------------------------------------------- Fitbit (Google)


def test_fitbit_authorize_prints_a_working_connection(make_emulator: Any, run_authorize: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = make_emulator()
    run = run_authorize("fitbit", emulator)
    url = run.consent_url()
    params = query_of(url)
    assert url.startswith(f"{emulator.url}/o/oauth2/v2/auth?")
    assert (params["response_type"], params["access_type"], params["prompt"]) == ("code", "offline", "consent")
    assert params["scope"].split(" ") == [fitbit_hook.METRICS_SCOPE, fitbit_hook.NUTRITION_SCOPE]
    assert params["client_id"] == "demo-google-client-id" and len(params["state"]) >= 24

    requests.get(url, timeout=10).raise_for_status()
    code, out, err = run.finish()
    assert code == 0, err
    assert "WARNING" not in err

    conn = printed_connection(out, "fitbit_default")
    refresh_token = conn["extra"]["refresh_token"]
    assert conn["conn_type"] == "fitbit" and conn["host"] == emulator.url
    assert conn["extra"]["refresh_url"] == f"{emulator.url}/token"  # not Google's: written out
    assert refresh_token == emulator.state.google.tokens.refresh_token
    assert_secrets_only_in_the_connection(out, err, GOOGLE_SECRET, refresh_token)

    monkeypatch.setenv("AIRFLOW_CONN_FITBIT_DEFAULT", json.dumps(conn))
    hook = FitbitHook()
    assert hook.identity()["healthUserId"] == emulator.state.google.settings.health_user_id
    assert hook.daily_calories(NOW.date() - dt.timedelta(days=30), NOW.date())  # the nutrition scope works


def test_fitbit_unticked_nutrition_warns(make_emulator: Any, run_authorize: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = make_emulator()
    # the user unticks the nutrition scope on Google's consent screen
    requests.post(f"{emulator.url}/_emulator/google/settings", json={"scopes": [fitbit_hook.METRICS_SCOPE]},
                  timeout=5).raise_for_status()
    run = run_authorize("fitbit", emulator)
    requests.get(run.consent_url(), timeout=10).raise_for_status()
    code, out, err = run.finish()
    assert code == 0, err
    assert f"WARNING: Google did not grant {fitbit_hook.NUTRITION_SCOPE}: calories eaten" in err
    assert fitbit_hook.METRICS_SCOPE not in err.split("WARNING")[1]

    monkeypatch.setenv("AIRFLOW_CONN_FITBIT_DEFAULT", json.dumps(printed_connection(out, "fitbit_default")))
    hook = FitbitHook()
    assert hook.list_samples("weight", NOW - dt.timedelta(days=30), NOW) is not None
    with pytest.raises(AuthorizationError, match="nutrition"):
        hook.daily_calories(NOW.date() - dt.timedelta(days=7), NOW.date())


# --------------------------------------------------------------------------- pieces


def test_scopes_match_the_hooks() -> None:
    assert authorize.METRICS_SCOPE == fitbit_hook.METRICS_SCOPE
    assert authorize.NUTRITION_SCOPE == fitbit_hook.NUTRITION_SCOPE


def test_strava_consent_url_is_the_documented_one() -> None:
    url = authorize.consent_url(authorize.SERVICES["strava"], "https://www.strava.com/oauth/authorize", "123",
                                "http://127.0.0.1:8765/callback", "s1")
    assert url == ("https://www.strava.com/oauth/authorize?client_id=123&redirect_uri=http://127.0.0.1:8765/callback"
                   "&response_type=code&approval_prompt=force&scope=read,activity:read_all&state=s1")


@pytest.mark.parametrize(("granted", "expected"), [
    (["read", "activity:read_all"], []),
    (["read", "activity:read"], ["'Only You' will be missing"]),
    (["read"], ["cannot read any activity"]),
    (None, ["did not report"]),
])
def test_strava_scope_warnings(granted: list[str] | None, expected: list[str]) -> None:
    warnings = authorize.scope_warnings(authorize.SERVICES["strava"], granted)
    assert len(warnings) == len(expected)
    for warning, text in zip(warnings, expected, strict=True):
        assert text in warning


@pytest.mark.parametrize("service", ["strava", "fitbit"])
def test_unknown_client_gets_no_redirect(service: str, make_emulator: Any) -> None:
    """RFC 6749 §4.1.2.1: a bad client_id is answered by the server, never redirected."""
    emulator = make_emulator()
    path = "/oauth/authorize" if service == "strava" else "/o/oauth2/v2/auth"
    response = requests.get(f"{emulator.url}{path}", allow_redirects=False, timeout=5, params={
        "client_id": "nope", "redirect_uri": "http://127.0.0.1:9/callback", "response_type": "code",
        "scope": "read", "state": "s"})
    assert response.status_code in (400, 401) and "Location" not in response.headers

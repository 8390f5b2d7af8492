"""StravaHook against the emulator over real HTTP, tokens in a real PostgreSQL.

Its pure logic (rate-limit headers and waits, error mapping, paging guards) is tested in
tests/unit/test_strava_logic.py."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import requests

from fitness_pipeline.errors import NeedsPersonError, RetriableError
from fitness_pipeline.hooks import ApiError, AuthorizationError, PaginationLoopError, RateLimitError, StravaHook
from fitness_pipeline.tokens import MemoryTokenStore
from tests.helpers import stored_tokens

NOW = dt.datetime.now(dt.UTC)
YEAR_AGO = NOW - dt.timedelta(days=365)
MONTH = dt.timedelta(days=30)
LIST = "GET /api/v3/athlete/activities"


def requests_to(emulator: Any, route: str) -> int:
    return int(emulator.stats()["requests"].get(route, 0))


def set_faults(emulator: Any, **faults: Any) -> None:
    requests.post(f"{emulator.url}/_emulator/faults", json=faults, timeout=5).raise_for_status()


def listed_ids(emulator: Any, start: dt.datetime, end: dt.datetime) -> set[int]:
    def inside(activity: dict[str, Any]) -> bool:
        return start < dt.datetime.fromisoformat(activity["start_date"]) < end

    return {a["id"] for a in emulator.state.strava.find_activities(inside)}


def test_pages_until_the_empty_page(strava_connection: Any) -> None:
    emulator = strava_connection
    hook = StravaHook()
    pages = list(hook.iter_activity_pages(YEAR_AGO, NOW))
    expected = listed_ids(emulator, YEAR_AGO, NOW)
    assert len(expected) > 200, "a year of the demo athlete spans several pages"
    assert [a["id"] for page in pages for a in page] == sorted(  # ascending with `after`, each once
        expected, key=lambda i: emulator.state.strava.activities.get(i)["start_date"])
    assert requests_to(emulator, LIST) == math.ceil(len(expected) / 200) + 1
    assert all(len(page) == 200 for page in pages[:-1])


def test_short_page_is_not_taken_for_the_last(connect_strava: Any, make_emulator: Any) -> None:
    emulator = connect_strava(make_emulator(short_page_every=1))
    activities = StravaHook().list_activities(YEAR_AGO, NOW)
    # every page lost two items after slicing, yet paging went on to the empty page
    assert len(activities) == len(listed_ids(emulator, YEAR_AGO, NOW)) - 2 * (requests_to(emulator, LIST) - 1)
    assert requests_to(emulator, LIST) > 2


def test_refresh_only_when_about_to_expire(strava_connection: Any) -> None:
    emulator = strava_connection
    for _ in range(3):
        StravaHook().list_activities(NOW - dt.timedelta(days=7), NOW)
    assert emulator.stats()["token_refreshes"] == 1


def test_rotated_refresh_token_survives_new_hook_instances(connect_strava: Any, make_emulator: Any,
                                                           db_conn: Any) -> None:
    # tokens that are always about to expire: every hook instance refreshes, and Strava rotates
    emulator = connect_strava(make_emulator(access_token_ttl=120, same_token_min_remaining=3600))
    for _ in range(3):
        assert StravaHook().list_activities(NOW - dt.timedelta(days=7), NOW) is not None
    # each request found its token about to expire, refreshed, and Strava rotated: none failed
    assert emulator.stats()["token_refreshes"] == requests_to(emulator, LIST) == 6
    ((_, _, stored),) = stored_tokens(db_conn)
    assert stored != "demo-refresh-token"
    # the Connection still holds the first refresh token, which rotation killed: only the store saves us
    with pytest.raises(AuthorizationError, match="Authorize the app again"):
        StravaHook(token_store=MemoryTokenStore()).list_activities(NOW - dt.timedelta(days=7), NOW)


def test_new_refresh_token_in_connection_takes_over(connect_strava: Any, make_emulator: Any) -> None:
    """A user who re-authorizes puts a new refresh token in the Connection; the store follows it."""
    emulator = make_emulator(access_token_ttl=120, same_token_min_remaining=3600)
    connect_strava(emulator)
    StravaHook().list_activities(NOW - dt.timedelta(days=1), NOW)
    requests.post(f"{emulator.url}/_emulator/strava/revoke", timeout=5).raise_for_status()
    with pytest.raises(AuthorizationError):
        StravaHook().list_activities(NOW - dt.timedelta(days=1), NOW)
    token = requests.post(f"{emulator.url}/oauth/token", timeout=5, data={
        "client_id": "demo-client-id", "client_secret": "demo-client-secret",
        "grant_type": "authorization_code", "code": "demo-code"}).json()["refresh_token"]
    connect_strava(emulator)  # the Connection now carries the newly authorized token
    assert token == requests.get(f"{emulator.url}/_emulator/strava/connection", timeout=5).json()[
        "extra"]["refresh_token"]
    assert StravaHook().list_activities(NOW - dt.timedelta(days=1), NOW) is not None


def _list_once(_: int) -> int:
    return len(StravaHook().list_activities(NOW - dt.timedelta(days=3), NOW))


def test_concurrent_refreshers_refresh_exactly_once(strava_connection: Any) -> None:
    emulator = strava_connection
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            _list_once(0)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert emulator.stats()["token_refreshes"] == 1


LIST_IN_A_PROCESS = """
import datetime as dt
from fitness_pipeline.hooks import StravaHook
now = dt.datetime.now(dt.UTC)
print(len(StravaHook().list_activities(now - dt.timedelta(days=3), now)))
"""


def test_concurrent_processes_refresh_exactly_once(connect_strava: Any, make_emulator: Any) -> None:
    # rotation on: a second refresh with the first refresh token would fail with 400
    emulator = connect_strava(make_emulator(access_token_ttl=3600, same_token_min_remaining=0))
    # separate interpreters (not fork: forking a process with threads can deadlock the child)
    workers = [subprocess.Popen([sys.executable, "-c", LIST_IN_A_PROCESS], env=os.environ.copy(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 4, [err[-2000:] for _, err in results]
    assert len({out.strip().splitlines()[-1] for out, _ in results}) == 1
    assert emulator.stats()["token_refreshes"] == 1


def test_5xx_is_retried_with_backoff(strava_connection: Any) -> None:
    emulator = strava_connection
    set_faults(emulator, fail_next=2, fail_status=503)
    assert StravaHook().list_activities(NOW - dt.timedelta(days=7), NOW) is not None
    assert requests_to(emulator, LIST) >= 3


def test_persistent_5xx_gives_up_with_a_clear_error(connect_strava: Any) -> None:
    emulator = connect_strava(max_retries=2)
    set_faults(emulator, fail_next=10, fail_status=502)
    with pytest.raises(ApiError, match="502") as error:
        StravaHook().list_activities(NOW - dt.timedelta(days=7), NOW)
    assert isinstance(error.value, RetriableError)  # Airflow's retries may see the server back


def test_a_listing_longer_than_max_pages_fails_the_try(connect_strava: Any) -> None:
    emulator = connect_strava(max_pages=2)  # a year of activities needs more than two pages of 200
    with pytest.raises(PaginationLoopError, match=r"did not end after 2 pages \(max_pages=2\)") as error:
        StravaHook().list_activities(YEAR_AGO, NOW)
    assert isinstance(error.value, NeedsPersonError)
    assert "Connection 'strava_default'" in str(error.value) and "raise the connection's extra max_pages" in str(
        error.value)
    assert requests_to(emulator, LIST) == 2  # the third page was not asked for


def test_timeout_is_retried(connect_strava: Any) -> None:
    emulator = connect_strava(read_timeout=0.5)
    set_faults(emulator, slow_next=1, slow_seconds=2)
    started = time.monotonic()
    assert StravaHook().list_activities(NOW - dt.timedelta(days=7), NOW) is not None
    assert time.monotonic() - started < 2  # the slow answer was not waited for


def test_malformed_json_is_a_clear_error(strava_connection: Any) -> None:
    set_faults(strava_connection, malformed_next=1)
    with pytest.raises(ApiError, match="not valid JSON"):
        StravaHook().list_activities(NOW - dt.timedelta(days=7), NOW)


def test_rate_limit_reached_waits_for_the_window_instead_of_a_429(connect_strava: Any, make_emulator: Any) -> None:
    emulator = connect_strava(make_emulator(read_limit=(3, 1000), rate_window_seconds=2),
                              rate_limit_window_seconds=2)
    hook = StravaHook()
    pages = list(hook.iter_activity_pages(YEAR_AGO, NOW, per_page=50))
    assert len(pages) > 3
    assert emulator.stats()["rate_limited"] == 0  # the headers said "full": it waited instead of asking


@pytest.mark.parametrize("store", ["fitness_db", "memory"])
def test_a_full_window_is_waited_out_then_the_listing_succeeds(store: str, connect_strava: Any,
                                                               make_emulator: Any) -> None:
    """The second hook (another task) finds the window full in the shared budget and waits without a 429;
    with tokens (and so its budget) in memory of its own it knows nothing of the usage yet: one 429, then
    the wait."""
    # no rotation: with tokens in memory each hook refreshes from the Connection's refresh token
    emulator = connect_strava(make_emulator(read_limit=(2, 1000), rate_window_seconds=2, rotate_refresh_tokens=False),
                              rate_limit_window_seconds=2, credential_store_conn_id=store)
    sleeps: list[float] = []
    # a window with activities: a page and the empty page use the window up (the emulated athlete may
    # have done nothing in the last two days)
    StravaHook().list_activities(NOW - MONTH, NOW)
    hook = StravaHook(sleep=lambda s: (sleeps.append(s), time.sleep(s)))
    assert hook.list_activities(NOW - MONTH, NOW) is not None
    assert emulator.stats()["rate_limited"] == (0 if store == "fitness_db" else 1)
    assert sleeps and all(s <= 2.6 for s in sleeps)


def test_429_with_a_long_wait_fails_the_try_with_a_clear_message(connect_strava: Any, make_emulator: Any) -> None:
    connect_strava(make_emulator(read_limit=(2, 1000), rate_window_seconds=900), max_rate_limit_wait=1)
    StravaHook().list_activities(NOW - MONTH, NOW)  # a page and the empty page: window full
    with pytest.raises(RateLimitError, match="max_rate_limit_wait=1 s") as error:
        StravaHook().list_activities(NOW - MONTH, NOW)
    assert "read limit" in str(error.value)
    assert error.value.retry_at > dt.datetime.now(dt.UTC)


def test_missing_scope_says_which(connect_strava: Any, make_emulator: Any) -> None:
    connect_strava(make_emulator(scope="read"))
    with pytest.raises(AuthorizationError, match="activity:read_all"):
        StravaHook().list_activities(NOW - dt.timedelta(days=2), NOW)


def test_wrong_client_secret(connect_strava: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    connect_strava()
    conn = json.loads(os.environ["AIRFLOW_CONN_STRAVA_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_STRAVA_DEFAULT", json.dumps({**conn, "password": "not-the-secret"}))
    with pytest.raises(AuthorizationError, match="client id/secret"):
        StravaHook().list_activities(NOW - dt.timedelta(days=2), NOW)


def test_no_token_reaches_a_log(strava_connection: Any, db_conn: Any, caplog: pytest.LogCaptureFixture,
                                capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    StravaHook().list_activities(NOW - dt.timedelta(days=30), NOW)
    ((_, access, refresh),) = stored_tokens(db_conn)
    captured = capsys.readouterr()
    logged = caplog.text + captured.out + captured.err  # Airflow 3 hooks log through structlog to stdout
    assert access and refresh
    assert "Refreshed the access token" in logged  # the refresh was logged, and what was logged is clean
    assert "GET /api/v3/athlete/activities" in logged
    for secret in (access, refresh, "demo-client-secret"):
        assert secret not in logged

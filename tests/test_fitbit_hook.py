"""FitbitHook (Google Health API v4) against the emulator over real HTTP, tokens in a real PostgreSQL.

Its pure logic (filters, error mapping, backoff, paging guards) is tested in tests/unit/test_fitbit_logic.py."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from typing import Any

import pytest
import requests

from fitness_devtools.embedded_stack import emulator_connection_env
from fitness_emulator.google_data import Bounds
from fitness_emulator.strava_data import day_number
from fitness_pipeline.hooks import ApiError, AuthorizationError, RateLimitError
from fitness_pipeline.hooks import fitbit as fitbit_module
from fitness_pipeline.hooks.fitbit import METRICS_SCOPE, NUTRITION_SCOPE, FitbitHook, physical_time_filter
from fitness_pipeline.tokens import MemoryTokenStore, PostgresTokenStore
from tests.helpers import query, stored_tokens

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
YEAR_AGO = NOW - dt.timedelta(days=365)
WEEK_AGO = NOW - dt.timedelta(days=7)
TODAY = NOW.date()
LIST = "GET /v4/users/me/dataTypes/{data_type}/dataPoints"
ROLLUP = "POST /v4/users/me/dataTypes/{data_type}/dataPoints:dailyRollUp"
SEED_REFRESH_TOKEN = "demo-google-refresh-token"
CLIENT_SECRET = "demo-google-client-secret"


def requests_to(emulator: Any, route: str) -> int:
    return int(emulator.stats()["requests"].get(route, 0))


def set_faults(emulator: Any, **faults: Any) -> None:
    requests.post(f"{emulator.url}/_emulator/faults", json=faults, timeout=5).raise_for_status()


def set_google(emulator: Any, **settings: Any) -> None:
    requests.post(f"{emulator.url}/_emulator/google/settings", json=settings, timeout=5).raise_for_status()


def freeze_clock(emulator: Any, at: float) -> list[float]:
    """Pin the emulator's clock; mutate the returned cell to move its time."""
    cell = [at]
    emulator.state.clock = lambda: cell[0]
    return cell


def point_id(point: dict[str, Any]) -> int:
    return int(point["name"].rsplit("/", 1)[1])


def emulator_ids(emulator: Any, data_type: str, start: dt.datetime | None, end: dt.datetime | None) -> list[int]:
    """The emulator's own points of ``data_type`` in [start, end), newest first."""
    bounds = Bounds(start.timestamp() if start else None, end.timestamp() if end else None)
    return [p.id for p in emulator.state.google.store.listed(data_type, bounds)]


class CountingStore:
    """A token store that counts how often the hook has to consult it."""

    def __init__(self) -> None:
        self.inner = PostgresTokenStore("fitness_db")
        self.calls = 0

    def get_token(self, *args: Any) -> Any:
        self.calls += 1
        return self.inner.get_token(*args)


@pytest.fixture
def connect_memory(make_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Like ``connect_fitbit`` but with tokens kept in memory: for tests that are not about the token
    store, so that no database is created and dropped for each of them."""

    def connect(emulator: Any = None, **extra: Any) -> Any:
        emulator = emulator or make_emulator()
        extra = {"backoff_factor": 0.05, "credential_store_conn_id": "memory", **extra}
        monkeypatch.setenv("AIRFLOW_CONN_FITBIT_DEFAULT", emulator_connection_env(emulator.url, "fitbit", **extra))
        return emulator

    return connect


# --- tokens ----------------------------------------------------------------------------------


def test_one_refresh_for_many_calls_and_hook_instances(connect_fitbit: Any, db_conn: Any) -> None:
    emulator = connect_fitbit()
    store = CountingStore()
    hook = FitbitHook(token_store=store)
    for _ in range(3):
        hook.list_samples("weight", WEEK_AGO, NOW)
    hook.daily_calories(TODAY - dt.timedelta(days=7), TODAY)
    assert store.calls == 1  # the access token is cached in the hook for its lifetime
    for _ in range(3):  # new instances (new tasks) reuse the stored access token
        FitbitHook().list_samples("body-fat", WEEK_AGO, NOW)
    assert emulator.stats()["google_token_refreshes"] == 1
    ((key, access, refresh),) = stored_tokens(db_conn)
    (expires_at,), = query(db_conn, "SELECT expires_at FROM oauth_token")
    assert key == "fitbit:fitbit_default"
    assert refresh == SEED_REFRESH_TOKEN  # Google sent no new refresh token: the old one is kept
    assert hook.access_token() == access
    assert dt.timedelta(seconds=3500) < expires_at - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=3599)


def test_rotated_refresh_token_is_stored_and_used_by_the_next_hook(connect_fitbit: Any, make_emulator: Any,
                                                                   db_conn: Any) -> None:
    # access tokens live 120 s, below the hook's 300 s margin: every request refreshes; Google rotates
    emulator = connect_fitbit(make_emulator(google={"access_token_ttl": 120, "rotate_refresh_tokens": True}))
    for _ in range(3):
        assert FitbitHook().list_samples("weight", WEEK_AGO, NOW) is not None
    assert emulator.stats()["google_token_refreshes"] == requests_to(emulator, LIST) == 3
    ((_, _, stored),) = stored_tokens(db_conn)
    assert stored != SEED_REFRESH_TOKEN
    assert stored == emulator.state.google.tokens.refresh_token  # the newest one Google issued
    # the Connection still holds the first refresh token, which rotation killed: only the store saves us
    with pytest.raises(AuthorizationError, match="invalid_grant"):
        FitbitHook(token_store=MemoryTokenStore()).list_samples("weight", WEEK_AGO, NOW)


def test_identity(connect_memory: Any) -> None:
    connect_memory()
    identity = FitbitHook().identity()
    assert identity["healthUserId"] == "108527364915620845632"
    assert identity["legacyUserId"] == "B7K2QX"


# --- paging and filters --------------------------------------------------------------------------


def test_pages_cover_every_point_once_newest_first(connect_memory: Any) -> None:
    emulator = connect_memory()
    hook = FitbitHook()
    pages = list(hook.iter_data_point_pages("weight", physical_time_filter("weight", YEAR_AGO, NOW), page_size=50))
    expected = emulator_ids(emulator, "weight", YEAR_AGO, NOW)
    assert len(expected) > 150, "a year of weigh-ins spans several pages"
    assert [point_id(p) for page in pages for p in page] == expected
    assert all(len(page) == 50 for page in pages[:-1])
    assert requests_to(emulator, LIST) == len(expected) // 50 + 1
    # list_samples (pageSize 10000) gives the same points
    assert [point_id(p) for p in hook.list_samples("weight", YEAR_AGO, NOW)] == expected


def test_a_final_empty_page_ends_the_listing(connect_memory: Any) -> None:
    emulator = connect_memory()
    newest_first = emulator.state.google.store.listed("weight", Bounds(YEAR_AGO.timestamp(), NOW.timestamp()))
    start = dt.datetime.fromtimestamp(newest_first[39].time, dt.UTC)  # exactly 40 points in [start, NOW)
    expected = emulator_ids(emulator, "weight", start, NOW)
    assert len(expected) == 40
    pages = list(FitbitHook().iter_data_point_pages("weight", physical_time_filter("weight", start, NOW),
                                                    page_size=10))
    assert [point_id(p) for page in pages for p in page] == expected
    assert [len(page) for page in pages] == [10, 10, 10, 10]
    assert requests_to(emulator, LIST) == 5  # the fifth answer was a bare {} and ended the listing


def test_physical_time_filters_are_accepted(connect_memory: Any) -> None:
    emulator = connect_memory()
    hook = FitbitHook()
    for data_type, start, end in [
        ("weight", NOW - dt.timedelta(days=60), NOW),
        ("body-fat", NOW - dt.timedelta(days=60), NOW - dt.timedelta(days=5)),
        ("height", dt.datetime(2020, 1, 1, tzinfo=dt.UTC), NOW),  # heights may be older than any window
        ("height", None, None),
        ("weight", NOW - dt.timedelta(days=30), None),
        ("body-fat", None, NOW - dt.timedelta(days=300)),
    ]:
        points = hook.list_samples(data_type, start, end)
        expected = emulator_ids(emulator, data_type, start, end)
        assert expected, f"{data_type} [{start}, {end}) holds points"
        assert [point_id(p) for p in points] == expected, f"{data_type} [{start}, {end})"


def test_a_rejected_filter_surfaces_googles_message(connect_memory: Any) -> None:
    connect_memory()
    camel = 'weight.sampleTime.physicalTime >= "2026-09-01T00:00:00Z"'
    with pytest.raises(ApiError) as error:
        list(FitbitHook().iter_data_point_pages("weight", camel))
    assert not isinstance(error.value, AuthorizationError)
    assert error.value.status == 400
    message = str(error.value)
    assert "INVALID_ARGUMENT" in message
    assert "snake_case" in message  # Google's own explanation reaches the task log
    assert "weight.sample_time.physical_time" in message


# --- daily calories --------------------------------------------------------------------------------


def test_daily_calories_in_chunks_of_at_most_90_days(connect_memory: Any) -> None:
    emulator = connect_memory()
    hook = FitbitHook()
    end = TODAY - dt.timedelta(days=5)
    for days, calls in ((90, 1), (91, 2), (200, 3)):
        emulator.reset_stats()
        first = end - dt.timedelta(days=days)
        points = hook.daily_calories(first, end)
        assert requests_to(emulator, ROLLUP) == calls, f"{days} days"
        got = {dt.date(**p["civilStartTime"]["date"]): p["nutritionLog"]["energy"]["kcalSum"] for p in points}
        assert len(got) == len(points), "no day twice across chunks"
        sums = emulator.state.google.store.daily_kcal(day_number(first), day_number(end))
        expected = {first + dt.timedelta(days=d - day_number(first)): round(kcal, 1) for d, kcal in sums.items()}
        assert got == pytest.approx(expected)
        assert all(first <= day < end for day in got)
    assert len(got) < 200  # days without logs are absent, not zero
    assert all(kcal > 0 for kcal in got.values())


def test_daily_calories_of_an_empty_range_asks_nothing(connect_memory: Any) -> None:
    emulator = connect_memory()
    assert FitbitHook().daily_calories(TODAY, TODAY) == []
    assert requests_to(emulator, ROLLUP) == 0


# --- errors and what they tell a person -----------------------------------------------------------


def test_revoked_refresh_token(connect_memory: Any) -> None:
    emulator = connect_memory()
    hook = FitbitHook()
    hook.list_samples("weight", WEEK_AGO, NOW)
    requests.post(f"{emulator.url}/_emulator/google/revoke", timeout=5).raise_for_status()
    # the cached access token died too: 401, one forced refresh, invalid_grant
    with pytest.raises(AuthorizationError) as error:
        hook.list_samples("weight", WEEK_AGO, NOW)
    message = str(error.value)
    assert "invalid_grant" in message
    assert "re-authorize" in message
    assert "access_type=offline&prompt=consent" in message
    assert "'Testing' status" in message and "7 days" in message


@pytest.mark.parametrize("access_token_ttl", [120, 3599])
def test_testing_app_refresh_token_dies_after_seven_days(connect_memory: Any, make_emulator: Any,
                                                         access_token_ttl: int) -> None:
    # 120 s: every hook refreshes up front; 3599 s: the stored access token is used, the emulator
    # (whose clock moved on) answers 401, and the forced refresh is refused
    emulator = connect_memory(make_emulator(google={"testing_app": True, "access_token_ttl": access_token_ttl}))
    store = MemoryTokenStore()  # shared by the hook instances, as the database is in Airflow
    FitbitHook(token_store=store).list_samples("weight", WEEK_AGO, NOW)
    started = time.time()
    clock = freeze_clock(emulator, started + 6 * 86400)
    assert FitbitHook(token_store=store).list_samples("weight", WEEK_AGO, NOW) is not None  # day 6: alive
    assert emulator.stats()["google_token_refreshes"] == 2  # the emulator's clock moved: a new access token
    clock[0] = started + 7 * 86400 + 60
    with pytest.raises(AuthorizationError) as error:
        FitbitHook(token_store=store).list_samples("weight", WEEK_AGO, NOW)
    message = str(error.value)
    assert "invalid_grant" in message and "re-authorize" in message
    assert "'Testing' status" in message and "7 days" in message and "In production" in message


@pytest.mark.parametrize(("granted", "call", "missing"), [
    ([METRICS_SCOPE], lambda hook: hook.daily_calories(TODAY - dt.timedelta(days=3), TODAY), NUTRITION_SCOPE),
    ([NUTRITION_SCOPE], lambda hook: hook.list_samples("weight", WEEK_AGO, NOW), METRICS_SCOPE),
])
def test_missing_scope_is_named_by_its_url(connect_memory: Any, granted: list[str], call: Any,
                                           missing: str) -> None:
    emulator = connect_memory()
    set_google(emulator, scopes=granted)  # applies to tokens issued from now on
    with pytest.raises(AuthorizationError) as error:
        call(FitbitHook())
    assert error.value.status == 403
    assert missing in str(error.value)
    assert "PERMISSION_DENIED" in str(error.value)
    assert emulator.stats()["google_token_refreshes"] == 1  # a 403 is not cured by refreshing


def test_account_not_linked_says_what_to_do(connect_memory: Any) -> None:
    emulator = connect_memory()
    set_google(emulator, account_linked=False)
    with pytest.raises(AuthorizationError) as error:
        FitbitHook().list_samples("weight", WEEK_AGO, NOW)
    message = str(error.value)
    assert "ACCOUNT_NOT_LINKED" in message
    assert "Fitbit app" in message and "authorize again" in message


def test_wrong_client_secret(connect_memory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    connect_memory()
    conn = json.loads(os.environ["AIRFLOW_CONN_FITBIT_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_FITBIT_DEFAULT", json.dumps({**conn, "password": "not-the-secret"}))
    with pytest.raises(AuthorizationError) as error:
        FitbitHook().list_samples("weight", WEEK_AGO, NOW)
    message = str(error.value)
    assert "invalid_client" in message
    assert "client id" in message and "client secret" in message
    assert "not-the-secret" not in message


def test_token_endpoint_failure_is_not_taken_for_a_dead_refresh_token(connect_memory: Any) -> None:
    emulator = connect_memory()
    set_faults(emulator, token_fail_next=1, token_fail_status=503)
    with pytest.raises(ApiError) as error:
        FitbitHook().list_samples("weight", WEEK_AGO, NOW)
    assert not isinstance(error.value, AuthorizationError)  # nobody has to re-authorize
    assert "token endpoint answered 503" in str(error.value)
    assert FitbitHook().list_samples("weight", WEEK_AGO, NOW) is not None  # the refresh token still works


def test_connection_without_refresh_token(connect_memory: Any) -> None:
    connect_memory(refresh_token="")
    with pytest.raises(AuthorizationError, match="no refresh_token"):
        FitbitHook().list_samples("weight", WEEK_AGO, NOW)


# --- retries ------------------------------------------------------------------------------------


def test_429_is_retried_after_a_backoff(connect_memory: Any, make_emulator: Any) -> None:
    emulator = connect_memory(make_emulator(google={"requests_per_minute": 3}))
    clock = freeze_clock(emulator, (time.time() // 60) * 60 + 1)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # waiting lets the emulator's minute window roll over
        sleeps.append(seconds)
        clock[0] += 60

    hook = FitbitHook(sleep=sleep)
    for _ in range(5):
        assert hook.list_samples("weight", WEEK_AGO, NOW) is not None
    assert emulator.stats()["google_rate_limited"] == 1
    assert requests_to(emulator, LIST) == 6
    assert len(sleeps) == 1
    assert 0 <= sleeps[0] <= 0.05 * 2  # backoff_factor 0.05, first attempt: full jitter below 0.1 s


def test_429_backs_off_exponentially_then_fails_the_try(connect_memory: Any, make_emulator: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = connect_memory(make_emulator(google={"requests_per_minute": 0}))  # never any quota
    monkeypatch.setattr(fitbit_module.random, "uniform", lambda low, high: high)  # the top of each jitter range
    sleeps: list[float] = []
    with pytest.raises(RateLimitError) as error:
        FitbitHook(sleep=sleeps.append).list_samples("weight", WEEK_AGO, NOW)
    assert sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert "429" in str(error.value) and "RESOURCE_EXHAUSTED" in str(error.value)
    assert error.value.retry_at > dt.datetime.now(dt.UTC)
    assert emulator.stats()["google_rate_limited"] == 6


def test_429_gives_up_after_its_attempts(connect_memory: Any, make_emulator: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = connect_memory(make_emulator(google={"requests_per_minute": 1}))
    freeze_clock(emulator, (time.time() // 60) * 60 + 1)  # the minute never ends
    monkeypatch.setattr(FitbitHook, "rate_limit_attempts", 1)
    sleeps: list[float] = []
    hook = FitbitHook(sleep=sleeps.append)
    hook.list_samples("weight", WEEK_AGO, NOW)
    with pytest.raises(RateLimitError):
        hook.list_samples("weight", WEEK_AGO, NOW)
    assert len(sleeps) == 1
    assert emulator.stats()["google_rate_limited"] == 2


def test_rate_limit_wait_is_capped_by_max_rate_limit_wait(connect_memory: Any, make_emulator: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    connect_memory(make_emulator(google={"requests_per_minute": 0}), backoff_factor=100, max_rate_limit_wait=0.25)
    monkeypatch.setattr(fitbit_module.random, "uniform", lambda low, high: high)
    sleeps: list[float] = []
    with pytest.raises(RateLimitError):
        FitbitHook(sleep=sleeps.append).list_samples("weight", WEEK_AGO, NOW)
    assert sleeps == [0.25] * 5


def test_503_is_retried(connect_memory: Any) -> None:
    emulator = connect_memory()
    set_faults(emulator, fail_next=2, fail_status=503)
    expected = emulator_ids(emulator, "weight", WEEK_AGO, NOW)
    assert [point_id(p) for p in FitbitHook().list_samples("weight", WEEK_AGO, NOW)] == expected
    assert requests_to(emulator, LIST) == 3


def test_daily_rollup_post_is_retried_on_503(connect_memory: Any) -> None:
    emulator = connect_memory()
    hook = FitbitHook()
    expected = hook.daily_calories(TODAY - dt.timedelta(days=30), TODAY - dt.timedelta(days=1))
    assert expected
    emulator.reset_stats()
    set_faults(emulator, fail_next=2, fail_status=503)
    assert hook.daily_calories(TODAY - dt.timedelta(days=30), TODAY - dt.timedelta(days=1)) == expected
    assert requests_to(emulator, ROLLUP) == 3


def test_persistent_503_gives_up_with_googles_status(connect_memory: Any) -> None:
    emulator = connect_memory(max_retries=1)
    set_faults(emulator, fail_next=10, fail_status=503)
    with pytest.raises(ApiError) as error:
        FitbitHook().list_samples("weight", WEEK_AGO, NOW)
    assert error.value.status == 503
    assert "503 UNAVAILABLE" in str(error.value)
    assert requests_to(emulator, LIST) == 2


def test_malformed_json_is_a_clear_error(connect_memory: Any) -> None:
    set_faults(connect_memory(), malformed_next=1)
    with pytest.raises(ApiError, match="not valid JSON"):
        FitbitHook().list_samples("weight", WEEK_AGO, NOW)


# --- secrets and conventions -------------------------------------------------------------------


def test_no_token_or_client_secret_reaches_a_log(connect_fitbit: Any, make_emulator: Any, db_conn: Any,
                                                caplog: pytest.LogCaptureFixture,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    emulator = connect_fitbit(make_emulator(google={"requests_per_minute": 2, "rotate_refresh_tokens": True}))
    clock = freeze_clock(emulator, (time.time() // 60) * 60 + 1)
    hook = FitbitHook(sleep=lambda _: clock.__setitem__(0, clock[0] + 60))
    hook.list_samples("weight", NOW - dt.timedelta(days=30), NOW)
    hook.daily_calories(TODAY - dt.timedelta(days=30), TODAY)
    hook.list_samples("height", None, None)  # the third request of the minute: a 429 warning is logged
    ((_, access, refresh),) = stored_tokens(db_conn)
    requests.post(f"{emulator.url}/_emulator/google/revoke", timeout=5).raise_for_status()
    clock[0] += 60
    with pytest.raises(AuthorizationError) as error:
        FitbitHook().list_samples("weight", WEEK_AGO, NOW)
    captured = capsys.readouterr()
    logged = caplog.text + captured.out + captured.err  # Airflow 3 hooks log through structlog to stdout
    assert access and refresh and refresh != SEED_REFRESH_TOKEN
    assert "Refreshed the access token" in logged  # the refresh was logged, and what was logged is clean
    assert "rate limit (429)" in logged
    for secret in (access, refresh, SEED_REFRESH_TOKEN, CLIENT_SECRET):
        assert secret not in logged
        assert secret not in str(error.value)

"""FitbitHook's pure logic: filters, error mapping from hand-built responses, 429 backoff, paging guards."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from typing import Any

import pytest

from fitness_pipeline import apis, compat, errors
from fitness_pipeline.hooks import AuthorizationError, RateLimitError
from fitness_pipeline.hooks import fitbit as fitbit_module
from fitness_pipeline.hooks.fitbit import FitbitHook, physical_time_filter
from tests.unit.stubs import StubConnection, hook_on, response, serve

LIST_URL = "https://health.googleapis.com/v4/users/me/dataTypes/weight/dataPoints?pageSize=10000"
TOKEN_URL = apis.GOOGLE_HEALTH.default_token_url()


def google_error(status: int, state: str, message: str = "m", *reasons: str, url: str = LIST_URL) -> Any:
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": r} for r in reasons]
    return response(status, {"error": {"code": status, "message": message, "status": state, "details": details}},
                    url)


def test_filter_text_is_the_documented_form() -> None:
    start = dt.datetime(2026, 9, 1, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # converted to UTC
    assert physical_time_filter("weight", start, dt.datetime(2026, 10, 1, tzinfo=dt.UTC)) == (
        'weight.sample_time.physical_time >= "2026-09-01T00:00:00Z" AND '
        'weight.sample_time.physical_time < "2026-10-01T00:00:00Z"')
    assert physical_time_filter("body-fat", None, dt.datetime(2026, 10, 1, tzinfo=dt.UTC)) == (
        'body_fat.sample_time.physical_time < "2026-10-01T00:00:00Z"')
    assert physical_time_filter("height", None, None) is None
    with pytest.raises(ValueError, match="aware"):
        physical_time_filter("weight", dt.datetime(2026, 9, 1), None)


# --- errors ------------------------------------------------------------------------------------------


def test_token_errors() -> None:
    hook = hook_on(FitbitHook)

    def token_answer(status: int, error: str | None, reason: str = "") -> Any:
        body = {"error": error, "error_description": "d"} if error else None
        return response(status, body, TOKEN_URL, method="POST", raw=None if error else b"<html>", reason=reason)

    dead = hook.token_error(token_answer(400, "invalid_grant"))
    assert isinstance(dead, AuthorizationError)
    for words in ("'fitbit_default'", "invalid_grant", "access_type=offline&prompt=consent", "'Testing' status"):
        assert words in str(dead)
    for client in ("invalid_client", "unauthorized_client"):
        error = hook.token_error(token_answer(401, client))
        assert isinstance(error, AuthorizationError) and client in str(error) and "client secret" in str(error)
    down = hook.token_error(token_answer(503, None, "Service Unavailable"))
    assert isinstance(down, errors.RetriableApiError)
    assert str(down) == "Google's token endpoint answered 503 (Service Unavailable)"
    odd = hook.token_error(token_answer(400, "invalid_request"))
    assert type(odd) is errors.FatalApiError and "invalid_request" in str(odd)


def test_api_errors() -> None:
    hook = hook_on(FitbitHook)
    denied = hook.api_error(google_error(403, "PERMISSION_DENIED", "no"))
    assert isinstance(denied, AuthorizationError) and denied.status == 403
    assert apis.GOOGLE_METRICS_SCOPE in str(denied) and "weight" in str(denied)
    rollup = "https://health.googleapis.com" + apis.GOOGLE_DAILY_ROLLUP_PATH.format(data_type="nutrition-log")
    assert apis.GOOGLE_NUTRITION_SCOPE in str(hook.api_error(google_error(403, "PERMISSION_DENIED", url=rollup)))
    unlinked = hook.api_error(google_error(400, "FAILED_PRECONDITION", "m", "ACCOUNT_NOT_LINKED"))
    assert isinstance(unlinked, AuthorizationError) and "Fitbit app" in str(unlinked)
    assert "authorize again" in str(hook.api_error(google_error(401, "UNAUTHENTICATED")))
    bad_filter = hook.api_error(google_error(400, "INVALID_ARGUMENT", "use snake_case", "INVALID_DATA_POINT_FILTER"))
    assert type(bad_filter) is errors.FatalApiError and bad_filter.status == 400
    assert str(bad_filter) == ("Google Health API answered 400 INVALID_ARGUMENT: use snake_case for GET "
                               "https://health.googleapis.com/v4/users/me/dataTypes/weight/dataPoints")
    unavailable = hook.api_error(google_error(503, "UNAVAILABLE", "try later"))
    assert isinstance(unavailable, errors.RetriableApiError) and "503 UNAVAILABLE" in str(unavailable)
    not_json = hook.api_error(response(502, raw=b"<html>", url=LIST_URL, reason="Bad Gateway"))
    assert isinstance(not_json, errors.RetriableApiError) and "502 : Bad Gateway" in str(not_json)


def test_token_response_keeps_the_refresh_token(monkeypatch: pytest.MonkeyPatch) -> None:
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    monkeypatch.setattr(fitbit_module.tokens, "utcnow", lambda: now)
    hook = hook_on(FitbitHook)
    tokens = hook.parse_token_response({"access_token": "a", "expires_in": 3599}, "old")
    assert (tokens.refresh_token, tokens.expires_at) == ("old", now + dt.timedelta(seconds=3599))
    assert hook.parse_token_response({"access_token": "a", "expires_in": 1, "refresh_token": "new"},
                                     "old").refresh_token == "new"
    with pytest.raises(errors.RetriableApiError, match="without access_token/expires_in"):
        hook.parse_token_response({"access_token": "a"}, "old")


# --- 429 ---------------------------------------------------------------------------------------------------


def test_429_backs_off_exponentially_then_gives_up_for_a_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fitbit_module.random, "uniform", lambda low, high: high)  # the top of each range
    sleeps: list[float] = []
    hook = hook_on(FitbitHook, StubConnection(extra_dejson={"refresh_token": "r", "backoff_factor": 0.5}),
                   sleep=sleeps.append)
    limited = response(429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}})
    for _ in range(FitbitHook.rate_limit_attempts):
        hook.after_response(limited)
        hook.wait_for_rate_limit(limited)
    with pytest.raises(RateLimitError) as raised:
        hook.wait_for_rate_limit(limited)
    assert sleeps == [1, 2, 4, 8, 16]
    assert not raised.value.reset_known  # Google says no reset: backoff through Airflow's retries
    hook.after_response(response(200, {}))  # a success starts the count again
    hook.wait_for_rate_limit(limited)
    assert sleeps[-1] == 1


def test_429_waits_are_capped_by_max_rate_limit_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fitbit_module.random, "uniform", lambda low, high: high)
    sleeps: list[float] = []
    hook = hook_on(FitbitHook, StubConnection(extra_dejson={"refresh_token": "r", "backoff_factor": 100,
                                                            "max_rate_limit_wait": 0.25}), sleep=sleeps.append)
    hook.wait_for_rate_limit(response(429, {}))
    assert sleeps == [0.25]


def test_429_with_retry_after_waits_that_long_or_comes_back_then() -> None:
    sleeps: list[float] = []
    hook = hook_on(FitbitHook, StubConnection(extra_dejson={"refresh_token": "r", "max_rate_limit_wait": 30}),
                   sleep=sleeps.append)
    hook.wait_for_rate_limit(response(429, {}, headers={"Retry-After": "7"}))
    assert sleeps == [7]
    with pytest.raises(RateLimitError) as raised:  # longer than max_rate_limit_wait: a reschedule for then
        hook.wait_for_rate_limit(response(429, {}, headers={"Retry-After": "120"}))
    assert raised.value.reset_known and 110 < (raised.value.retry_at - dt.datetime.now(dt.UTC)).total_seconds() <= 120
    assert "Retry-After 120 s" in str(raised.value) and "max_rate_limit_wait" in str(raised.value)
    hook.wait_for_rate_limit(response(429, {}, headers={"Retry-After": "soon"}))  # unusable: backoff as without
    assert len(sleeps) == 2 and sleeps[-1] <= 30


# --- paging ------------------------------------------------------------------------------------------


def points(n: int, first: int = 0) -> list[dict[str, Any]]:
    return [{"name": f"users/1/dataTypes/weight/dataPoints/{i}"} for i in range(first, first + n)]


def test_follows_next_page_tokens_to_the_end() -> None:
    hook = hook_on(FitbitHook)
    sent = serve(hook, [{"dataPoints": points(2), "nextPageToken": "a"},
                        {"dataPoints": points(2, 2), "nextPageToken": "b"}, {}])  # a final page may be {}
    assert [len(p) for p in hook.iter_data_point_pages("weight", "f", page_size=2)] == [2, 2]
    assert sent == [{"pageSize": 2, "filter": "f"}, {"pageSize": 2, "filter": "f", "pageToken": "a"},
                    {"pageSize": 2, "filter": "f", "pageToken": "b"}]


@pytest.mark.parametrize("tokens", [["a", "a"], ["a", "b", "a"]])
def test_a_page_token_handed_out_twice_fails_the_try(tokens: list[str]) -> None:
    hook = hook_on(FitbitHook)
    sent = serve(hook, [{"dataPoints": points(1, i), "nextPageToken": t} for i, t in enumerate(tokens)])
    with pytest.raises(errors.PaginationLoopError) as raised:
        list(hook.iter_data_point_pages("weight", None))
    assert len(sent) == len(tokens)  # the repeated token was not followed
    message = str(raised.value)
    assert "Connection 'fitbit_default'" in message
    assert "the weight listing (/v4/users/me/dataTypes/weight/dataPoints" in message
    assert f"handed out a nextPageToken it had handed out before (page {len(tokens)})" in message
    assert "clear the task" in message
    assert isinstance(errors.airflow_outcome(raised.value), compat.AirflowFailException)


def test_more_pages_than_max_pages_fail_the_try() -> None:
    hook = hook_on(FitbitHook, StubConnection(extra_dejson={"refresh_token": "r", "max_pages": 4}))
    counter = itertools.count()
    sent = serve(hook, lambda params: {"dataPoints": points(1), "nextPageToken": f"t{next(counter)}"})
    with pytest.raises(errors.PaginationLoopError, match=r"body-fat listing .* did not end after 4 pages"):
        list(hook.iter_data_point_pages("body-fat", None))
    assert len(sent) == 4


@pytest.mark.parametrize("body", [[], {"dataPoints": {"a": 1}}, "text"])
def test_an_unexpected_shape_is_retriable(body: Any) -> None:
    hook = hook_on(FitbitHook)
    serve(hook, [body])
    with pytest.raises(errors.RetriableApiError, match="unexpected JSON shape"):
        list(hook.iter_data_point_pages("weight", None))


def test_hook_follows_airflow_conventions() -> None:
    assert FitbitHook.conn_name_attr == "fitbit_conn_id"
    assert FitbitHook.default_conn_name == "fitbit_default"
    assert FitbitHook.conn_type == "fitbit"
    assert FitbitHook().fitbit_conn_id == "fitbit_default"
    assert FitbitHook("my_fitbit").conn_id == "my_fitbit"
    assert math.isclose(FitbitHook.token_refresh_margin, 300.0)
    assert FitbitHook().idempotent_posts() == frozenset({"POST"})

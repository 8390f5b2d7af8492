"""StravaHook's pure logic: rate-limit headers and waits (an injected clock and sleep), error mapping
from hand-built responses, and the pagination guards (``request`` answered without HTTP)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from fitness_pipeline import apis, compat, errors
from fitness_pipeline.hooks import ApiError, AuthorizationError, RateLimitError, StravaHook
from fitness_pipeline.hooks.strava import MAX_429_IN_A_ROW, RateLimitUsage
from tests.unit.stubs import StubConnection, hook_on, response, serve

WINDOW = 900
DAY = 86_400
#: 2026-11-20 12:05:00 UTC: 300 s into a 15-minute window
NOW = 1_795_262_700.0
assert NOW % WINDOW == 300
AFTER = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
BEFORE = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def headers(read_usage: str = "10,100", read_limit: str = "100,1000") -> dict[str, str]:
    return {"X-ReadRateLimit-Limit": read_limit, "X-ReadRateLimit-Usage": read_usage,
            "X-RateLimit-Limit": "200,2000", "X-RateLimit-Usage": "10,100"}


class Clocked:
    """A hook whose clock is ``now`` and whose sleeps move it on."""

    def __init__(self, **extra: Any) -> None:
        self.now = NOW
        self.sleeps: list[float] = []
        conn = StubConnection(extra_dejson={"refresh_token": "r", **extra})
        self.hook = hook_on(StravaHook, conn, sleep=self.sleep)
        self.hook._clock = lambda: self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --- RateLimitUsage ------------------------------------------------------------------------------


def test_usage_from_headers() -> None:
    usage = RateLimitUsage.from_headers(headers("100,150"), "X-ReadRateLimit", "read", NOW, WINDOW)
    assert usage == RateLimitUsage("read", 100, 100, 1000, 150, int(NOW // WINDOW), int(NOW // DAY))


@pytest.mark.parametrize("bad", [{}, {"X-ReadRateLimit-Limit": "100,1000"}, headers("ten,100"), headers("10")])
def test_usage_from_missing_or_malformed_headers(bad: dict[str, str]) -> None:
    assert RateLimitUsage.from_headers(bad, "X-ReadRateLimit", "read", NOW, WINDOW) is None


def test_reset_at() -> None:
    def usage(window: int, daily: int, at: float = NOW) -> RateLimitUsage:
        return RateLimitUsage("read", 100, window, 1000, daily, int(at // WINDOW), int(at // DAY))

    window_end = (NOW // WINDOW + 1) * WINDOW
    midnight = (NOW // DAY + 1) * DAY
    assert usage(99, 500).reset_at(NOW, WINDOW) is None
    assert usage(100, 500).reset_at(NOW, WINDOW) == window_end
    assert usage(100, 500).reset_at(window_end, WINDOW) is None  # read in an earlier window: over
    assert usage(100, 1000).reset_at(NOW, WINDOW) == midnight  # the day wins over the window
    assert usage(5, 1000).reset_at(NOW, WINDOW) == midnight
    assert usage(5, 1000).reset_at(midnight, WINDOW) is None


# --- waiting for a reset ---------------------------------------------------------------------------


def test_no_usage_known_no_wait() -> None:
    clocked = Clocked()
    clocked.hook.before_request()
    assert clocked.sleeps == []


def test_a_full_window_is_waited_out_before_the_next_request() -> None:
    clocked = Clocked(max_rate_limit_wait=900)
    clocked.hook.after_response(response(200, [], headers=headers("100,150")))
    clocked.hook.before_request()
    assert clocked.sleeps == [WINDOW - 300 + 0.5]  # to the boundary, and half a second past it
    clocked.hook.before_request()  # the usage was forgotten: no second wait
    assert len(clocked.sleeps) == 1


def test_a_reset_beyond_max_rate_limit_wait_raises_with_a_known_reset() -> None:
    clocked = Clocked()  # max_rate_limit_wait 60 s, the window resets in 600 s
    clocked.hook.after_response(response(200, [], headers=headers("100,150")))
    with pytest.raises(RateLimitError) as raised:
        clocked.hook.before_request()
    error = raised.value
    assert error.reset_known and error.status == 429
    assert error.retry_at == dt.datetime.fromtimestamp((NOW // WINDOW + 1) * WINDOW, dt.UTC)
    assert "the read limit reached (100/100 this window, 150/1000 today)" in str(error)
    assert "600 s away, more than max_rate_limit_wait=60 s" in str(error)
    assert clocked.sleeps == []


def test_the_daily_limit_reschedules_for_midnight() -> None:
    clocked = Clocked(max_rate_limit_wait=900)
    clocked.hook.after_response(response(200, [], headers=headers("20,1000")))
    with pytest.raises(RateLimitError) as raised:
        clocked.hook.before_request()
    assert raised.value.retry_at == dt.datetime.fromtimestamp((NOW // DAY + 1) * DAY, dt.UTC)


def test_a_429_without_headers_waits_for_the_next_window() -> None:
    clocked = Clocked(max_rate_limit_wait=900, rate_limit_window_seconds=600)
    limited = response(429, {"message": "Rate Limit Exceeded"})
    clocked.hook.after_response(limited)
    clocked.hook.wait_for_rate_limit(limited)
    assert clocked.sleeps == [(NOW // 600 + 1) * 600 - NOW + 0.5]


def test_429s_that_do_not_end_give_up_with_an_unknown_reset() -> None:
    clocked = Clocked(max_rate_limit_wait=900)
    limited = response(429, {"message": "Rate Limit Exceeded"})
    for _ in range(MAX_429_IN_A_ROW):
        clocked.hook.after_response(limited)
        clocked.hook.wait_for_rate_limit(limited)
    with pytest.raises(RateLimitError) as raised:
        clocked.hook.wait_for_rate_limit(limited)
    assert not raised.value.reset_known  # the promised resets did not come: backoff, not a reschedule
    assert len(clocked.sleeps) == MAX_429_IN_A_ROW


def test_a_success_resets_the_429_count() -> None:
    clocked = Clocked(max_rate_limit_wait=900)
    limited = response(429, {})
    for _ in range(MAX_429_IN_A_ROW + 2):
        clocked.hook.after_response(limited)
        clocked.hook.wait_for_rate_limit(limited)
        clocked.hook.after_response(response(200, []))
    assert len(clocked.sleeps) == MAX_429_IN_A_ROW + 2


# --- errors ------------------------------------------------------------------------------------------


def strava_errors(status: int, *fields: str, resource: str = "Application") -> Any:
    body = {"message": "Bad Request", "errors": [{"resource": resource, "field": f, "code": "invalid"}
                                                 for f in fields]}
    return response(status, body, "https://www.strava.com/oauth/token", method="POST")


def test_token_errors() -> None:
    hook = hook_on(StravaHook)
    dead = hook.token_error(strava_errors(400, "refresh_token", resource="RefreshToken"))
    assert isinstance(dead, AuthorizationError) and dead.status == 400
    assert "'strava_default'" in str(dead) and "Authorize the app again" in str(dead)
    for bad_client in (strava_errors(400, "client_id"), strava_errors(401, "client_secret"), strava_errors(401)):
        error = hook.token_error(bad_client)
        assert isinstance(error, AuthorizationError) and "client id/secret" in str(error)
    down = hook.token_error(response(503, raw=b"<html>", reason="Service Unavailable"))
    assert isinstance(down, errors.RetriableApiError) and down.status == 503
    assert str(down) == "Strava's token endpoint answered 503 (Service Unavailable)"
    odd = hook.token_error(strava_errors(400, "grant_type"))
    assert type(odd) is errors.FatalApiError
    assert "Application.grant_type: invalid" in str(odd)


def test_api_errors() -> None:
    hook = hook_on(StravaHook)
    url = "https://www.strava.com/api/v3/athlete/activities?page=1&per_page=200"
    scope = response(401, {"errors": [{"resource": "AccessToken", "field": "activity:read_permission",
                                       "code": "missing"}]}, url)
    assert not hook.refresh_may_help(scope)
    missing = hook.api_error(scope)
    assert isinstance(missing, AuthorizationError) and apis.STRAVA.scope in str(missing)
    revoked = response(401, {"message": "Authorization Error", "errors": []}, url)
    assert hook.refresh_may_help(revoked)
    assert "may have revoked access" in str(hook.api_error(revoked))
    gone = hook.api_error(response(404, {"message": "Record Not Found", "errors": []}, url))
    assert type(gone) is errors.FatalApiError and gone.status == 404
    assert str(gone) == ("Strava answered 404 (Record Not Found) for GET "
                         "https://www.strava.com/api/v3/athlete/activities")  # no query string
    broken = hook.api_error(response(502, raw=b"", url=url, reason="Bad Gateway"))
    assert isinstance(broken, errors.RetriableApiError) and "502 (Bad Gateway)" in str(broken)


def test_a_body_that_is_not_json_is_retriable_and_not_quoted() -> None:
    with pytest.raises(errors.RetriableApiError, match="not valid JSON") as raised:
        StravaHook.json_body(response(200, raw=b"<html>secret athlete page</html>",
                                      headers={"Content-Type": "text/html"}))
    assert "secret" not in str(raised.value) and "text/html" in str(raised.value)


def test_token_response() -> None:
    hook = hook_on(StravaHook)
    tokens = hook.parse_token_response({"access_token": "a", "expires_at": 1_800_000_000}, "old")
    assert (tokens.access_token, tokens.refresh_token) == ("a", "old")
    assert tokens.expires_at == dt.datetime.fromtimestamp(1_800_000_000, dt.UTC)
    assert hook.parse_token_response({"access_token": "a", "expires_at": 1, "refresh_token": "new"},
                                     "old").refresh_token == "new"
    with pytest.raises(errors.RetriableApiError, match="without access_token"):
        hook.parse_token_response({"access_token": "a"}, "old")


# --- paging ---------------------------------------------------------------------------------------------


def page(first_id: int, size: int = 3) -> list[dict[str, Any]]:
    return [{"id": i, "start_date": "2026-02-01T00:00:00Z"} for i in range(first_id, first_id + size)]


def test_pages_until_the_empty_page_with_the_documented_params() -> None:
    hook = hook_on(StravaHook)
    sent = serve(hook, [page(1), page(4, 1), page(5), []])  # a short page is not the last
    assert [len(p) for p in hook.iter_activity_pages(AFTER, BEFORE)] == [3, 1, 3]
    assert sent == [{"after": int(AFTER.timestamp()), "before": int(BEFORE.timestamp()), "page": n,
                     "per_page": apis.STRAVA_MAX_PER_PAGE} for n in (1, 2, 3, 4)]


def test_a_server_ignoring_page_fails_on_the_repeated_page() -> None:
    hook = hook_on(StravaHook)
    sent = serve(hook, lambda params: page(1))
    with pytest.raises(errors.PaginationLoopError) as raised:
        list(hook.iter_activity_pages(AFTER, BEFORE))
    assert len(sent) == 2
    message = str(raised.value)
    assert "Connection 'strava_default'" in message
    assert apis.STRAVA_ACTIVITIES_PATH in message and AFTER.isoformat() in message
    assert "answered a page it had answered before (page 2)" in message
    assert "API root (https://api.example.test)" in message and "clear the task" in message
    assert isinstance(errors.airflow_outcome(raised.value), compat.AirflowFailException)


def test_more_pages_than_max_pages_fail_the_try() -> None:
    hook = hook_on(StravaHook, StubConnection(extra_dejson={"refresh_token": "r", "max_pages": "3"}))
    sent = serve(hook, lambda params: page(params["page"] * 10))  # new activities on every page, forever
    with pytest.raises(errors.PaginationLoopError, match=r"did not end after 3 pages \(max_pages=3\)") as raised:
        list(hook.iter_activity_pages(AFTER, BEFORE))
    assert len(sent) == 3  # the fourth request was not sent
    assert "raise the connection's extra max_pages" in str(raised.value)


def test_max_pages_counts_the_empty_page() -> None:
    hook = hook_on(StravaHook, StubConnection(extra_dejson={"refresh_token": "r", "max_pages": 3}))
    serve(hook, [page(1), page(4), []])
    assert len(list(hook.iter_activity_pages(AFTER, BEFORE))) == 2


def test_an_answer_that_is_not_a_list_is_retriable() -> None:
    hook = hook_on(StravaHook)
    serve(hook, [{"message": "odd"}])
    with pytest.raises(errors.RetriableApiError, match="answered a JSON dict, expected a list"):
        list(hook.iter_activity_pages(AFTER, BEFORE))


def test_naive_windows_are_refused() -> None:
    hook = hook_on(StravaHook)
    serve(hook, [[]])
    with pytest.raises(ValueError, match="aware"):
        list(hook.iter_activity_pages(dt.datetime(2026, 1, 1), BEFORE))


def test_hook_follows_airflow_conventions() -> None:
    assert StravaHook.conn_name_attr == "strava_conn_id"
    assert StravaHook.default_conn_name == "strava_default"
    assert StravaHook.conn_type == "strava"
    assert StravaHook().strava_conn_id == "strava_default"
    assert issubclass(RateLimitError, ApiError)


def test_a_resumed_listing_always_moves_its_cursor_forward() -> None:
    from fitness_pipeline.tasks.strava import next_after

    def page(*starts: int) -> list[dict[str, Any]]:
        return [{"id": s, "start_date": dt.datetime.fromtimestamp(s, dt.UTC).isoformat()} for s in starts]

    # normally one second before the newest start: more activities of that second may follow
    assert next_after(100, page(150, 160, 170)) == 169
    # only the seam (the second the last try stopped at) on a short page: all of that second is in, move past it
    assert next_after(169, page(170)) == 170
    assert next_after(169, page(170, 170)) == 170
    # a full page of that one second: more of it may follow, so the cursor stays
    assert next_after(169, page(*[170] * apis.STRAVA_MAX_PER_PAGE)) == 169
    # a page out of order or without readable dates never moves it
    assert next_after(100, page(170, 150)) == 100
    assert next_after(100, [{"id": 1}]) == 100

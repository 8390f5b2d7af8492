"""Hook for the Strava API v3."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import requests

from fitness_pipeline import apis
from fitness_pipeline.budget import DAY, STRAVA_READ_LIMITS, Budget, Limits, MemoryBudget, PostgresBudget
from fitness_pipeline.hooks.base import (
    ApiError,
    AuthorizationError,
    AuthorizationRevokedError,
    OAuthApiHook,
    RateLimitError,
    RetriableApiError,
    error_class_for_status,
)
from fitness_pipeline.tokens import PostgresTokenStore, TokenSet

ACTIVITIES_PATH = apis.STRAVA_ACTIVITIES_PATH
ACTIVITY_PATH = apis.STRAVA_ACTIVITY_PATH
MAX_PER_PAGE = apis.STRAVA_MAX_PER_PAGE
MAX_429_IN_A_ROW = 5


def rate_limit_clock() -> float:
    """The clock Strava's windows and days are read on: the worker's. (The soak, which moves the emulator's
    clock an hour per run, replaces this function so that the budget's windows move with it.)"""
    return time.time()


@dataclass(frozen=True)
class RateLimitUsage:
    """One bucket of Strava's limits, as its headers say: ``"<15-min>,<daily>"``."""

    bucket: str
    window_limit: int
    window_usage: int
    daily_limit: int
    daily_usage: int
    window_index: int  # which window (since the epoch) the usage was read in
    day_index: int
    #: when the response carrying the headers arrived (UTC); not part of what the usage is
    seen_at: dt.datetime | None = field(default=None, compare=False)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], prefix: str, bucket: str, now: float,
                     window_seconds: int) -> RateLimitUsage | None:
        try:
            window_limit, daily_limit = (int(v) for v in headers[f"{prefix}-Limit"].split(","))
            window_usage, daily_usage = (int(v) for v in headers[f"{prefix}-Usage"].split(","))
        except (KeyError, ValueError):
            return None
        return cls(bucket, window_limit, window_usage, daily_limit, daily_usage,
                   int(now // window_seconds), int(now // DAY), dt.datetime.fromtimestamp(now, dt.UTC))

    def reset_at(self, now: float, window_seconds: int) -> float | None:
        """When requests are allowed again (epoch seconds), or None when they are now."""
        if self.day_index == int(now // DAY) and self.daily_usage >= self.daily_limit:
            return (self.day_index + 1) * DAY
        if self.window_index == int(now // window_seconds) and self.window_usage >= self.window_limit:
            return (self.window_index + 1) * window_seconds
        return None


class StravaHook(OAuthApiHook):
    """Read a Strava athlete's data through the API v3.

    Connection (type ``strava``): ``login`` = client id, ``password`` = client secret,
    extra ``refresh_token`` (with scope ``activity:read_all``); ``host`` = API root,
    default ``https://www.strava.com`` (every path after it is the real API's, so any
    faithful server can stand in). Optional extras: ``refresh_url`` (the token endpoint, default
    ``<host>/oauth/token``), ``rate_limit_window_seconds`` (900), ``max_rate_limit_wait``
    (60 s: a longer wait raises :class:`RateLimitError`, which the DAG turns into a reschedule),
    ``read_rate_limits`` (``"100,1000"``: the application's read limits per window and day until a response
    shows them; see :mod:`fitness_pipeline.budget`), ``connect_timeout``,
    ``read_timeout``, ``max_retries``, ``backoff_factor``, ``credential_store_conn_id``
    (``fitness_db``; ``memory`` keeps tokens in the process only). The former names ``token_url`` and
    ``token_store_conn_id`` still work (deprecated: Airflow hides the values of extras named "*token*").
    """

    conn_name_attr = "strava_conn_id"
    default_conn_name = "strava_default"
    conn_type = "strava"
    hook_name = "Strava"

    api: ClassVar[apis.OAuthApi] = apis.STRAVA

    def __init__(self, strava_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(strava_conn_id, **kwargs)
        self.strava_conn_id = strava_conn_id
        self._usage: dict[str, RateLimitUsage] = {}
        self._refused = 0
        self._clock: Callable[[], float] = lambda: rate_limit_clock()  # looked up per call: see there
        #: the share of each window and day of the application's read budget this hook may use (a history
        #: import leaves the rest to the hourly runs)
        self.budget_share = 1.0
        self._budget: Budget | None = None

    @property
    def budget(self) -> Budget:
        """The application's read budget: in the token store's database (shared by every task, worker and
        run that uses it), or in this process when tokens are kept in memory."""
        if self._budget is None:
            store = self.token_store
            limits = self.read_rate_limits
            key = f"strava:{self.connection.login}:{self.window_seconds}"
            if isinstance(store, PostgresTokenStore):
                self._budget = PostgresBudget(store.postgres_conn_id, key, self.window_seconds, limits)
            else:
                self._budget = MemoryBudget(self.window_seconds, limits)  # the hook's own, like its tokens
        return self._budget

    @property
    def read_rate_limits(self) -> Limits:
        """The application's read limits until a response shows them: extra ``read_rate_limits``
        (``"<per window>,<per day>"``), else Strava's standard 100 and 1,000."""
        raw = str(self.extra.get("read_rate_limits") or "")
        try:
            window, day = (int(part) for part in raw.split(","))
            return Limits(window, day)
        except ValueError:
            return STRAVA_READ_LIMITS

    def close(self) -> None:
        super().close()
        if self._budget is not None:
            self._budget.close()

    @property
    def window_seconds(self) -> int:
        return int(self.extra.get("rate_limit_window_seconds") or apis.STRAVA_RATE_LIMIT_WINDOW_SECONDS)

    # --- data ------------------------------------------------------------------------------

    def iter_activity_pages(self, after: dt.datetime, before: dt.datetime,
                            per_page: int = MAX_PER_PAGE) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of SummaryActivity dicts that started in ``(after, before)``.

        Pages until an empty page: Strava may return short pages before the end. A server that
        pages in a loop (a page equal to an earlier one, or more than ``max_pages`` requests) fails
        the try with :class:`~fitness_pipeline.errors.PaginationLoopError` (see ``PageGuard``).
        """
        guard = self.page_guard(f"the Strava activity listing ({ACTIVITIES_PATH}, started in "
                                f"({after.isoformat()}, {before.isoformat()}))")
        page = 1
        while True:
            params = {"after": _epoch(after), "before": _epoch(before), "page": page, "per_page": per_page}
            guard.request()
            activities = self.json_body(self.request("GET", ACTIVITIES_PATH, params=params))
            if not isinstance(activities, list):
                # retriable: a 200 of the wrong shape is more often a gateway's fault than a change of API
                raise RetriableApiError(
                    f"{ACTIVITIES_PATH} answered a JSON {type(activities).__name__}, expected a list")
            if not activities:
                return
            # Strava ignoring `page` would answer the same page forever
            guard.seen(_page_key(activities), "answered a page it had answered before")
            yield activities
            page += 1

    def list_activities(self, after: dt.datetime, before: dt.datetime) -> list[dict[str, Any]]:
        """All SummaryActivity dicts that started in ``(after, before)``, as a list."""
        return [activity for page in self.iter_activity_pages(after, before) for activity in page]

    def get_activity(self, activity_id: int) -> dict[str, Any] | None:
        """The DetailedActivity ``activity_id`` of this hook's athlete (``GET /activities/{id}``, one read of the
        shared budget); None when Strava says it has no such record (deleted, or not this athlete's: 404 with
        "Record Not Found"; any other 404, e.g. a wrong host, raises)."""
        try:
            activity = self.json_body(self.request("GET", f"{ACTIVITY_PATH}/{int(activity_id)}"))
        except ApiError as error:
            if getattr(error, "status", None) == 404 and "Record Not Found" in str(error):
                return None
            raise
        if not isinstance(activity, dict):
            raise RetriableApiError(f"{ACTIVITY_PATH}/<id> answered a JSON {type(activity).__name__}, expected an "
                                    "object")
        return activity

    # --- tokens ------------------------------------------------------------------------------

    def parse_token_response(self, body: Mapping[str, Any], refresh_token: str) -> TokenSet:
        try:
            expires_at = dt.datetime.fromtimestamp(int(body["expires_at"]), dt.UTC)
            return TokenSet(str(body["access_token"]), str(body.get("refresh_token") or refresh_token), expires_at)
        except (KeyError, TypeError, ValueError):
            raise RetriableApiError("Strava's token endpoint answered without access_token/expires_at") from None

    def token_error(self, response: requests.Response) -> ApiError:
        fields = _error_fields(response)
        if response.status_code == 400 and "refresh_token" in fields:
            return AuthorizationRevokedError(
                f"Strava refused the refresh token of connection {self.conn_id!r}{self.whose()} (revoked, or replaced "
                f"by a newer one that was not saved). {self.authorize_again()}", status=400)
        if "client_id" in fields or "client_secret" in fields or response.status_code == 401:
            return AuthorizationError(
                f"Strava refused the client id/secret of connection {self.conn_id!r}: check login and password "
                "against your API application's settings.", status=response.status_code)
        return error_class_for_status(response.status_code)(
            f"Strava's token endpoint answered {response.status_code} {_summary(response)}",
            status=response.status_code)

    def refresh_may_help(self, response: requests.Response) -> bool:
        return "activity:read_permission" not in _error_fields(response)

    def api_error(self, response: requests.Response) -> ApiError:
        fields = _error_fields(response)
        if response.status_code == 401 and "activity:read_permission" in fields:
            return AuthorizationError(
                "The Strava token lacks the activity:read scope: authorize again with scope "
                f"{apis.STRAVA.scope} (the athlete must leave both boxes ticked).", status=401)
        if response.status_code == 401:
            return AuthorizationError(
                f"Strava refused the access token of connection {self.conn_id!r} even after a refresh: "
                "the athlete may have revoked access; authorize the app again.", status=401)
        return error_class_for_status(response.status_code)(
            f"Strava answered {response.status_code} {_summary(response)} for "
            f"{response.request.method} {response.url.split('?')[0]}", status=response.status_code)

    # --- rate limits ------------------------------------------------------------------------

    def last_rate_limit_usage(self) -> list[RateLimitUsage]:
        """The usage of each bucket as the last response showing it said (with ``seen_at``); empty before
        any response, and right after waiting for a reset (the usage it showed is no longer current)."""
        return list(self._usage.values())

    def after_response(self, response: requests.Response) -> None:
        if response.status_code != 429:
            self._refused = 0
        now = self._clock()
        for prefix, bucket in (("X-ReadRateLimit", "read"), ("X-RateLimit", "overall")):
            usage = RateLimitUsage.from_headers(response.headers, prefix, bucket, now, self.window_seconds)
            if usage:
                self._usage[bucket] = usage
                if bucket == "read":  # what Strava counted for the whole application: into the shared budget
                    self._observe(now, usage)

    def _observe(self, now: float, usage: RateLimitUsage) -> None:
        try:
            self.budget.observe(now, usage.window_usage, usage.window_limit, usage.daily_usage, usage.daily_limit)
        except Exception as error:  # the answer arrived: the next reservation will say if the database is gone
            self.log.warning("Could not record Strava's rate-limit usage in the shared budget (%s)",
                             type(error).__name__)

    def before_request(self) -> None:
        """Wait out a limit the last response already showed as reached, then reserve this request in the
        application's shared budget (waiting for its reset, or rescheduling when that is too far): no request
        is sent that the budget has no room for."""
        self._wait_for_reset(reason="reached")
        while (reset := self.budget.reserve(now := self._clock(), self.budget_share)) is not None:
            share = "" if self.budget_share >= 1 else f" (this run may use {self.budget_share:.0%} of it)"
            self._pause_until(reset, f"the application's read limit is reached in the budget its tasks share{share}",
                              now)

    def wait_for_rate_limit(self, response: requests.Response) -> None:
        self._refused += 1
        if self._refused > MAX_429_IN_A_ROW:  # the headers keep promising a reset that does not come
            raise RateLimitError(f"Strava answered 429 {self._refused} times in a row", dt.datetime.now(dt.UTC)
                                 + dt.timedelta(seconds=self.window_seconds), reset_known=False)
        if not self._wait_for_reset(reason="exceeded"):
            # a 429 without usable headers: assume the short window and wait for the next one
            now = self._clock()
            self._pause_until((now // self.window_seconds + 1) * self.window_seconds, "an unknown bucket", now)

    def _wait_for_reset(self, reason: str) -> bool:
        now = self._clock()
        resets = [(usage.reset_at(now, self.window_seconds), usage) for usage in self._usage.values()]
        resets = [(at, usage) for at, usage in resets if at is not None]
        if not resets:
            return False
        reset_at, usage = max(resets, key=lambda pair: pair[0])
        what = (f"the {usage.bucket} limit {reason} ({usage.window_usage}/{usage.window_limit} this window, "
                f"{usage.daily_usage}/{usage.daily_limit} today)")
        self._pause_until(reset_at, what, now)
        return True

    def _pause_until(self, reset_at: float, what: str, now: float) -> None:
        wait = max(0.0, reset_at - now)
        when = dt.datetime.fromtimestamp(reset_at, dt.UTC)
        if wait > self.settings.max_rate_limit_wait:
            raise RateLimitError(
                f"Strava rate limit: {what}; it resets at {when:%Y-%m-%d %H:%M:%S} UTC, {math.ceil(wait)} s away, "
                f"more than max_rate_limit_wait={self.settings.max_rate_limit_wait:g} s.", retry_at=when)
        self.log.warning("Strava rate limit: %s; waiting %.0f s until %s UTC", what, wait, f"{when:%H:%M:%S}")
        self._sleep(wait + 0.5)  # half a second past the boundary: clocks differ a little
        self._usage.clear()


def _epoch(value: dt.datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("Strava windows need aware datetimes (UTC)")
    return int(value.timestamp())


def _page_key(activities: list[Any]) -> tuple[Any, ...]:
    """What tells pages apart: their activities' ids (the whole item for one without an id)."""
    return tuple(a.get("id") if isinstance(a, dict) and "id" in a else repr(a) for a in activities)


def _error_fields(response: requests.Response) -> set[str]:
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return set()
    return {str(e.get("field")) for e in errors if isinstance(e, dict)}


def _summary(response: requests.Response) -> str:
    """Strava's error message and codes: they hold no personal data, unlike bodies in general."""
    try:
        body = response.json()
        errors = ", ".join(f"{e.get('resource')}.{e.get('field')}: {e.get('code')}" for e in body.get("errors") or [])
        return f"({body.get('message')}{'; ' + errors if errors else ''})"
    except (ValueError, AttributeError):
        return f"({response.reason})"

"""Hook for Fitbit data through the Google Health API v4.

The legacy Fitbit Web API (api.fitbit.com) was switched off on 2026-11-02 and answers
``410 Gone``; Fitbit's data is served by the Google Health API with Google OAuth 2.0.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import requests

from fitness_pipeline import apis, tokens
from fitness_pipeline.hooks.base import (
    ApiError,
    AuthorizationError,
    AuthorizationRevokedError,
    OAuthApiHook,
    RateLimitError,
    RetriableApiError,
    error_class_for_status,
)
from fitness_pipeline.tokens import TokenSet

METRICS_SCOPE = apis.GOOGLE_METRICS_SCOPE
NUTRITION_SCOPE = apis.GOOGLE_NUTRITION_SCOPE
SCOPE_OF = apis.GOOGLE_SCOPE_OF
#: the AIP-160 field path of each type's sample time
FILTER_FIELD = {"weight": "weight.sample_time.physical_time", "body-fat": "body_fat.sample_time.physical_time",
                "height": "height.sample_time.physical_time"}
MAX_PAGE_SIZE = apis.GOOGLE_MAX_PAGE_SIZE
MAX_ROLLUP_DAYS = apis.GOOGLE_MAX_ROLLUP_DAYS


class FitbitHook(OAuthApiHook):
    """Read a Fitbit user's body measurements and nutrition through the Google Health API v4.

    Connection (type ``fitbit``): ``login`` = Google OAuth client id, ``password`` = client
    secret, extra ``refresh_token`` (granted with ``access_type=offline`` and the scopes
    ``googlehealth.health_metrics_and_measurements.readonly`` and ``googlehealth.nutrition.readonly``);
    ``host`` = API root, default ``https://health.googleapis.com``; extra ``refresh_url`` (the token
    endpoint; formerly ``token_url``), default ``https://oauth2.googleapis.com/token``. Other extras as
    for every hook here: ``connect_timeout``, ``read_timeout``, ``max_retries``, ``backoff_factor``,
    ``max_rate_limit_wait``, ``credential_store_conn_id`` (formerly ``token_store_conn_id``).
    """

    conn_name_attr = "fitbit_conn_id"
    default_conn_name = "fitbit_default"
    conn_type = "fitbit"
    hook_name = "Fitbit (Google Health API)"

    api: ClassVar[apis.OAuthApi] = apis.GOOGLE_HEALTH
    # Google answers 429 without Retry-After or usage headers: back off with jitter, a few times
    rate_limit_attempts: ClassVar[int] = 5

    def __init__(self, fitbit_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(fitbit_conn_id, **kwargs)
        self.fitbit_conn_id = fitbit_conn_id
        self._rate_limited = 0

    def idempotent_posts(self) -> frozenset[str]:
        return frozenset({"POST"})  # the only POSTs this hook sends are dailyRollUp reads

    # --- data ------------------------------------------------------------------------------

    def iter_data_point_pages(self, data_type: str, filter_: str | None = None,
                              page_size: int = MAX_PAGE_SIZE) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of data points (newest first), following ``nextPageToken`` to the end.

        A server that pages in a loop (a page token handed out twice, or more than ``max_pages``
        requests) fails the try with :class:`~fitness_pipeline.errors.PaginationLoopError` (see ``PageGuard``).
        """
        path = apis.GOOGLE_DATA_POINTS_PATH.format(data_type=data_type)
        guard = self.page_guard(f"the {data_type} listing ({path}, filter {filter_!r})")
        params: dict[str, Any] = {"pageSize": page_size}
        if filter_:
            params["filter"] = filter_
        while True:
            guard.request()
            body = self.json_body(self.request("GET", path, params=params))
            points = body.get("dataPoints") or [] if isinstance(body, Mapping) else None
            if points is None or not isinstance(points, list):
                # retriable: a 200 of the wrong shape is more often a gateway's fault than a change of API
                raise RetriableApiError(f"the {data_type} list answered an unexpected JSON shape")
            if points:
                yield points
            token = body.get("nextPageToken")
            if not token:
                return
            guard.seen(str(token), "handed out a nextPageToken it had handed out before")
            params["pageToken"] = token

    def list_samples(self, data_type: str, start: dt.datetime | None, end: dt.datetime | None) -> list[dict[str, Any]]:
        """All ``data_type`` samples measured in ``[start, end)`` (either bound may be open)."""
        return [p for page in self.iter_data_point_pages(data_type, physical_time_filter(data_type, start, end))
                for p in page]

    def daily_calories(self, first_day: dt.date, end_day: dt.date) -> list[dict[str, Any]]:
        """dailyRollUp points of ``nutrition-log`` for civil dates in ``[first_day, end_day)``,
        in chunks of at most 90 days. Days without logs are absent (Google omits them)."""
        points: list[dict[str, Any]] = []
        chunk_start = first_day
        while chunk_start < end_day:
            chunk_end = min(end_day, chunk_start + dt.timedelta(days=MAX_ROLLUP_DAYS))
            body = self.json_body(self.request(
                "POST", apis.GOOGLE_DAILY_ROLLUP_PATH.format(data_type="nutrition-log"),
                json={"range": {"start": {"date": _date_json(chunk_start)}, "end": {"date": _date_json(chunk_end)}},
                      "windowSizeDays": 1}))
            if not isinstance(body, Mapping) or not isinstance(body.get("rollupDataPoints", []), list):
                # not "no days" (deletions would follow); retriable, as for the listing's shape
                raise RetriableApiError("dailyRollUp answered an unexpected JSON shape")
            points += body.get("rollupDataPoints") or []
            chunk_start = chunk_end
        return points

    def identity(self) -> dict[str, Any]:
        """``{"healthUserId", "legacyUserId", ...}`` of the authorized user."""
        return dict(self.json_body(self.request("GET", apis.GOOGLE_IDENTITY_PATH)))

    # --- tokens ------------------------------------------------------------------------------

    def parse_token_response(self, body: Mapping[str, Any], refresh_token: str) -> TokenSet:
        try:
            expires_at = tokens.utcnow() + dt.timedelta(seconds=int(body["expires_in"]))
            # Google normally sends no new refresh token: keep the one we have; store one it does send
            return TokenSet(str(body["access_token"]), str(body.get("refresh_token") or refresh_token), expires_at)
        except (KeyError, TypeError, ValueError):
            raise RetriableApiError("Google's token endpoint answered without access_token/expires_in") from None

    def token_error(self, response: requests.Response) -> ApiError:
        error = _oauth_error(response)
        if error == "invalid_grant":
            return AuthorizationRevokedError(
                f"Google refused the refresh token of connection {self.conn_id!r}{self.whose()} (invalid_grant): "
                f"re-authorize (with access_type=offline&prompt=consent). {self.authorize_again()} Apps in "
                "'Testing' status lose refresh tokens after 7 days: publish the OAuth app 'In production'.",
                status=response.status_code)
        if error in ("invalid_client", "unauthorized_client"):
            return AuthorizationError(
                f"Google refused the OAuth client of connection {self.conn_id!r} ({error}): check login (client id) "
                "and password (client secret).", status=response.status_code)
        return error_class_for_status(response.status_code)(
            f"Google's token endpoint answered {response.status_code} ({error or response.reason})",
            status=response.status_code)

    def api_error(self, response: requests.Response) -> ApiError:
        status, message, reasons = _google_error(response)
        path = response.url.split("?")[0]
        if response.status_code == 403:
            data_type = next((t for t in SCOPE_OF if f"/dataTypes/{t}/" in path), None)
            scope = SCOPE_OF.get(data_type or "", "the scope this data needs")
            return AuthorizationError(
                f"Google Health API denied {data_type or path} (PERMISSION_DENIED): the token lacks {scope}, or the "
                f"API is not enabled in the Google Cloud project. Authorize again with that scope. ({message})",
                status=403)
        if "ACCOUNT_NOT_LINKED" in reasons:
            return AuthorizationError(
                "The Google account has no Fitbit data linked (ACCOUNT_NOT_LINKED): sign in to the Fitbit app with "
                "this Google account, finish moving the Fitbit account to Google, then authorize again.",
                status=response.status_code)
        if response.status_code == 401:
            return AuthorizationError(
                f"Google refused the access token of connection {self.conn_id!r} even after a refresh "
                f"(UNAUTHENTICATED): authorize again. ({message})", status=401)
        return error_class_for_status(response.status_code)(
            f"Google Health API answered {response.status_code} {status}: {message} "
            f"for {response.request.method} {path}", status=response.status_code)

    # --- rate limits ------------------------------------------------------------------------

    def wait_for_rate_limit(self, response: requests.Response) -> None:
        """429 RESOURCE_EXHAUSTED: wait as long as a ``Retry-After`` header says (a front end may send one;
        longer than ``max_rate_limit_wait``: :class:`RateLimitError` for that moment), else exponential backoff
        with full jitter; after ``rate_limit_attempts`` waits give up for Airflow to retry."""
        self._rate_limited += 1
        now = dt.datetime.now(dt.UTC)
        if self._rate_limited > self.rate_limit_attempts:
            raise RateLimitError(
                f"Google Health API kept answering 429 RESOURCE_EXHAUSTED (300 requests per minute per user) after "
                f"{self.rate_limit_attempts} waits: failing this try so Airflow retries later.",
                retry_at=now + dt.timedelta(minutes=1), reset_known=False)
        retry_after = retry_after_seconds(response)
        if retry_after is not None and retry_after > self.settings.max_rate_limit_wait:
            raise RateLimitError(
                f"Google Health API answered 429 with Retry-After {retry_after:.0f} s, longer than the "
                f"max_rate_limit_wait of connection {self.conn_id!r} ({self.settings.max_rate_limit_wait:.0f} s).",
                retry_at=now + dt.timedelta(seconds=retry_after))
        backoff = random.uniform(0, self.settings.backoff_factor * 2 ** self._rate_limited)
        wait = retry_after if retry_after is not None else min(self.settings.max_rate_limit_wait, 60.0, backoff)
        self.log.warning("Google Health API rate limit (429); waiting %.1f s", wait)
        self._sleep(wait)

    def after_response(self, response: requests.Response) -> None:
        if response.status_code != 429:
            self._rate_limited = 0


def retry_after_seconds(response: requests.Response) -> float | None:
    """Seconds a ``Retry-After`` header (delta seconds or an HTTP date) asks to wait; None without a usable one."""
    from urllib3.util.retry import Retry

    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(Retry().parse_retry_after(value)))
    except Exception:  # urllib3 raises InvalidHeader for garbage: then the header does not count
        return None


def physical_time_filter(data_type: str, start: dt.datetime | None, end: dt.datetime | None) -> str | None:
    """The AIP-160 filter for samples measured in ``[start, end)``, in the form the API accepts."""
    field = FILTER_FIELD[data_type]
    clauses = []
    if start is not None:
        clauses.append(f'{field} >= "{_rfc3339(start)}"')
    if end is not None:
        clauses.append(f'{field} < "{_rfc3339(end)}"')
    return " AND ".join(clauses) or None


def _rfc3339(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("Google Health windows need aware datetimes (UTC)")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date_json(day: dt.date) -> dict[str, int]:
    return {"year": day.year, "month": day.month, "day": day.day}


def _oauth_error(response: requests.Response) -> str | None:
    try:
        return str(response.json().get("error"))
    except (ValueError, AttributeError):
        return None


def _google_error(response: requests.Response) -> tuple[str, str, set[str]]:
    """(status, message, ErrorInfo reasons) of a Google error body; they carry no personal data."""
    try:
        error = response.json()["error"]
        reasons = {str(d.get("reason")) for d in error.get("details") or [] if isinstance(d, dict)}
        return str(error.get("status")), str(error.get("message")), reasons
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", response.reason or "", set()

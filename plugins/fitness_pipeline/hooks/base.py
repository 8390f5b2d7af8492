"""What the Strava and Fitbit (Google Health) hooks share: a ``requests`` session with
``urllib3.Retry``, OAuth refresh-token handling through a :class:`TokenStore`, timeouts
on every request, and nothing secret in any log."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_exceptions
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.util.retry import Retry

from fitness_pipeline.apis import OAuthApi
from fitness_pipeline.compat import BaseHook, mask_secret

# the error classes live in fitness_pipeline.errors; these names are imported from here too
from fitness_pipeline.errors import (
    ApiError,
    AuthorizationError,
    AuthorizationRevokedError,
    FatalApiError,
    PaginationLoopError,
    RateLimitError,
    RetriableApiError,
    error_class_for_status,
)
from fitness_pipeline.schema import DEFAULT_ATHLETE_ID
from fitness_pipeline.tokens import MemoryTokenStore, PostgresTokenStore, TokenSet, TokenStore, token_key

__all__ = [
    "DEFAULT_MAX_REQUEST_SECONDS",
    "DEFAULT_TOKEN_STORE_CONN_ID",
    "RENAMED_EXTRAS",
    "ApiError",
    "AuthorizationError",
    "AuthorizationRevokedError",
    "DeadlineRetry",
    "FatalApiError",
    "HttpSettings",
    "OAuthApiHook",
    "PageGuard",
    "PaginationLoopError",
    "RateLimitError",
    "RetriableApiError",
    "current_extra",
    "error_class_for_status",
    "max_request_seconds",
    "transport_error",
]

#: Where the token store lives unless the Connection's extra says otherwise.
DEFAULT_TOKEN_STORE_CONN_ID = "fitness_db"


#: Connection extras renamed (new name: old name) because Airflow hides the value of every extra whose name
#: contains "token" (its secrets masker's sensitive words), in the connection form and in task logs, so a
#: user could not check them. The old names are still read; the new name wins when both have a value.
RENAMED_EXTRAS = {"refresh_url": "token_url", "credential_store_conn_id": "token_store_conn_id"}


def current_extra(extra: Mapping[str, Any], *, log: Any = None, conn_id: str | None = None) -> dict[str, Any]:
    """``extra`` with the deprecated names of :data:`RENAMED_EXTRAS` moved to their new names.

    With ``log``, each old name found is logged as a warning (the name, never its value).
    """
    extra = dict(extra)
    for new, old in RENAMED_EXTRAS.items():
        if old not in extra:
            continue
        value = extra.pop(old)
        if extra.get(new) in ("", None):
            extra[new] = value
            ignored = ""
        else:
            ignored = f"; its value is ignored, as {new!r} is set too"
        if log is not None:
            log.warning("Connection %r: the extra %r is deprecated, rename it %r (Airflow hides the values of "
                        "extras whose name contains 'token')%s", conn_id, old, new, ignored)
    return extra


@dataclass(frozen=True)
class HttpSettings:
    """Per-connection knobs, read from the Connection's extra (all optional)."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_retries: int = 5
    backoff_factor: float = 1.0
    #: longer waits fail the call with RateLimitError; the DAG then reschedules the task
    max_rate_limit_wait: float = 60.0
    #: the Postgres connection of the token store; None: tokens in the process only ("memory")
    credential_store_conn_id: str | None = DEFAULT_TOKEN_STORE_CONN_ID
    #: the most requests one listing sends before it is taken for a server paging in a loop (see PageGuard).
    #: 10,000: Strava at 200 per page holds 2,000,000 activities in that (real accounts: a few thousand, the
    #: most prolific tens of thousands); Google at 10,000 points per page, 100 million
    max_pages: int = 10_000

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> HttpSettings:
        extra = current_extra(extra)
        values: dict[str, Any] = {}
        for name, default in cls.__dataclass_fields__.items():
            if name in extra and extra[name] not in ("", None):
                values[name] = type(default.default)(extra[name]) if default.default is not None else extra[name]
        # only an explicit "memory": an empty form field means the default, like every other field (tokens
        # kept in the process only would lose Strava's rotated refresh token when the process ends)
        if extra.get("credential_store_conn_id") == "memory":
            values["credential_store_conn_id"] = None
        return cls(**values)

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


class PageGuard:
    """Stops a listing that does not end: a page key (Google's page token, a fingerprint of a Strava
    page) seen twice, or more than ``max_pages`` requests, raise :class:`PaginationLoopError`.

    That is a :class:`~fitness_pipeline.errors.NeedsPersonError`, not a retriable error: a retry sends the
    same requests from the first page again, so a server that loops (a page token it hands out twice, a
    ``page`` it ignores) loops again, hours of retries later, and every try spends up to ``max_pages``
    requests of a quota all tasks share (Strava: 1,000 reads a day). A loop that was a passing fault costs
    little to fail on: the next hourly run lists the window again, and clearing the task retries at once.
    """

    def __init__(self, conn_id: str, what: str, max_pages: int, api_root: str) -> None:
        self.conn_id = conn_id
        self.what = what
        self.max_pages = max_pages
        self.api_root = api_root
        self.pages = 0
        self._seen: set[Hashable] = set()

    def request(self) -> None:
        """Count a request about to be sent; past ``max_pages`` it is not sent."""
        if self.pages >= self.max_pages:
            raise PaginationLoopError(
                f"Connection {self.conn_id!r}: {self.what} did not end after {self.pages} pages (max_pages="
                f"{self.max_pages}), more than any real account holds: the server is probably paging in a loop. "
                f"If the account really holds that much, raise the connection's extra max_pages; otherwise check "
                f"that its API root ({self.api_root}) is the real API or a faithful server. Then clear the task "
                "(retries would send the same requests again).")
        self.pages += 1

    def seen(self, key: Hashable, cause: str) -> None:
        """Remember ``key`` of the page just received; a key seen before means a loop (``cause`` says which)."""
        if key in self._seen:
            raise PaginationLoopError(
                f"Connection {self.conn_id!r}: {self.what} {cause} (page {self.pages}): the server is paging in a "
                f"loop, so the listing was stopped. Check that the connection's API root ({self.api_root}) is the "
                "real API or a faithful server, then clear the task (retries would send the same requests again).")
        self._seen.add(key)


#: the longest one request may take with all its retries (extra ``max_request_seconds``), unless one attempt alone
#: takes longer (connect_timeout + read_timeout); see :class:`DeadlineRetry` and the README's "Rate limits, retries
#: and errors"
DEFAULT_MAX_REQUEST_SECONDS = 300.0


def max_request_seconds(extra: Mapping[str, Any]) -> float:
    """The extra ``max_request_seconds`` (a request's deadline, retries included), else the default."""
    value = extra.get("max_request_seconds")
    return DEFAULT_MAX_REQUEST_SECONDS if value in ("", None) else float(value)


class DeadlineRetry(Retry):
    """``urllib3.Retry`` that also gives up when another attempt could not end before ``deadline``.

    urllib3 counts retries, not time: with ``max_retries`` 5 and the default timeouts a hung endpoint would hold
    the worker (5+1) x (10+60) s plus the backoff. Here a retry is only made when its wait (backoff or
    ``Retry-After``) plus one whole attempt (``attempt_seconds`` = connect_timeout + read_timeout) still ends before
    the deadline; otherwise the last error stands (a 5xx answer is returned as is, for the hook's own error).
    ``progress`` (shared by the copies urllib3 makes) counts the attempts and says whether the deadline stopped them.
    """

    deadline: float | None = None
    attempt_seconds: float = 0.0
    progress: dict[str, Any]

    def until(self, deadline: float, attempt_seconds: float) -> DeadlineRetry:
        """A fresh copy for one request that must end by ``deadline`` (``time.monotonic()``)."""
        retry = self.new()
        retry.deadline, retry.attempt_seconds = deadline, attempt_seconds
        retry.progress = {"attempts": 1, "deadline_hit": False}
        return retry

    def new(self, **kw: Any) -> DeadlineRetry:
        retry: DeadlineRetry = super().new(**kw)  # type: ignore[assignment]
        retry.deadline, retry.attempt_seconds = self.deadline, self.attempt_seconds
        retry.progress = getattr(self, "progress", {"attempts": 1, "deadline_hit": False})
        return retry

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> DeadlineRetry:
        retry: DeadlineRetry = super().increment(method, url, response, error, _pool, _stacktrace)  # type: ignore[assignment]
        if self.deadline is not None:
            wait = retry.get_backoff_time() + retry.backoff_jitter
            if response is not None and retry.respect_retry_after_header:
                wait = max(wait, retry.get_retry_after(response) or 0.0)
            if time.monotonic() + wait + self.attempt_seconds > self.deadline:
                self.progress["deadline_hit"] = True
                raise MaxRetryError(_pool, url or "", error or ResponseError("deadline (max_request_seconds)"))
        self.progress["attempts"] += 1
        return retry


def transport_error(error: requests.RequestException, *, api: str, conn_id: str, method: str, path: str,
                    settings: HttpSettings, budget: float | None = None, attempts: int | None = None,
                    elapsed: float | None = None, deadline_hit: bool = False) -> RetriableApiError:
    """A clear :class:`RetriableApiError` for a request that got no (whole) answer: which connection, what
    happened, which extras govern it and what to do. ``path`` is the URL's path only (its query may hold
    personal data, e.g. dates); ``attempts``/``elapsed``: how often and how long it was tried."""
    tried = ""
    if attempts is not None and elapsed is not None:
        tried = f", {attempts} attempt{'s' if attempts != 1 else ''} in {elapsed:.1f} s"
        if deadline_hit:
            tried += " (no time left for another within max_request_seconds)"
    extras = (f"extras connect_timeout={settings.connect_timeout:g}, read_timeout={settings.read_timeout:g}, "
              f"max_retries={settings.max_retries}" + (f", max_request_seconds={budget:g}" if budget else ""))
    # after urllib3's retries requests raises ConnectionError for most faults (a read timeout too): urllib3's reason
    reason = error.args[0].reason if error.args and isinstance(error.args[0], MaxRetryError) else None
    if isinstance(error, requests.exceptions.ConnectTimeout) or (
            isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError)):
        what = (f"timed out connecting after {settings.connect_timeout:g} s{tried} ({extras}): the API root is "
                "unreachable: check the connection's host and the network; the task retries")
    elif isinstance(error, requests.exceptions.Timeout) or isinstance(reason, ReadTimeoutError):
        what = (f"timed out reading after {settings.read_timeout:g} s{tried} ({extras}): the API is slow or down; "
                "the task retries (raise read_timeout if the API is only slow)")
    elif isinstance(error, requests.exceptions.SSLError) or isinstance(reason, urllib3_exceptions.SSLError):
        what = (f"failed in TLS ({_cause(error)}){tried}: check that the connection's host is the API's "
                "(its certificate was refused); the task retries")
    elif isinstance(error, requests.exceptions.ChunkedEncodingError) or isinstance(reason, ProtocolError):
        what = (f"broke off while the answer was read ({_cause(error)}){tried} ({extras}): a network or API "
                "fault; the task retries")
    elif isinstance(error, requests.exceptions.RetryError):
        what = f"failed on every retry ({_cause(error)}){tried} ({extras}): the API is failing; the task retries"
    elif isinstance(error, requests.exceptions.ConnectionError):
        what = (f"could not connect ({_cause(error)}){tried} ({extras}): check the connection's host and port "
                "and that the API is up; the task retries")
    else:
        what = f"failed ({_cause(error)}){tried}: the task retries"
    return RetriableApiError(f"{where_of(api, conn_id, method, path)} {what}")


def where_of(api: str, conn_id: str, method: str, path: str) -> str:
    return f"{api} (connection {conn_id!r}): {method} {path}"


def _cause(error: BaseException) -> str:
    """The innermost cause (a socket error rather than urllib3's wrappers, whose text holds the whole URL)."""
    inner, seen = error, {id(error)}
    while True:
        reason = getattr(inner, "reason", None)
        nxt = reason if isinstance(reason, BaseException) else None
        if nxt is None and inner.args and isinstance(inner.args[0], BaseException):
            nxt = inner.args[0]
        nxt = nxt or inner.__cause__ or inner.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        inner = nxt
    if type(inner).__module__ == "builtins" and str(inner):  # ConnectionRefusedError: [Errno 111] ...
        return f"{type(inner).__name__}: {inner}"
    return type(inner).__name__


class OAuthApiHook(BaseHook):
    """Base for hooks whose Connection holds an OAuth client and a refresh token.

    Connection: ``login`` = client id, ``password`` = client secret, ``host`` = the API root
    (scheme included), extra ``refresh_token`` and optional ``refresh_url`` (the token endpoint) plus the
    :class:`HttpSettings` fields. The old names ``token_url`` and ``token_store_conn_id`` still work.
    """

    #: the API's default host, OAuth endpoints and scopes
    api: ClassVar[OAuthApi]
    #: refresh when the access token has less than this many seconds left
    token_refresh_margin: ClassVar[float] = 300.0
    #: HTTP statuses retried with exponential backoff and jitter
    retry_statuses: ClassVar[frozenset[int]] = frozenset({500, 502, 503, 504})

    def __init__(self, conn_id: str, *, athlete_id: int = DEFAULT_ATHLETE_ID, token_store: TokenStore | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__()
        self.conn_id = conn_id
        #: whose data: the default athlete's tokens come from the Connection's extra, another's from the token store
        self.athlete_id = athlete_id
        self._token_store = token_store
        self._sleep = sleep
        self._session: requests.Session | None = None
        self._tokens: TokenSet | None = None

    # --- configuration from the Connection ------------------------------------------------

    @cached_property
    def connection(self) -> Any:
        return self.get_connection(self.conn_id)

    @cached_property
    def extra(self) -> dict[str, Any]:
        """The Connection's extra, deprecated names moved to their new ones (:data:`RENAMED_EXTRAS`)."""
        return current_extra(self.connection.extra_dejson or {}, log=self.log, conn_id=self.conn_id)

    @cached_property
    def settings(self) -> HttpSettings:
        return HttpSettings.from_extra(self.extra)

    @cached_property
    def base_url(self) -> str:
        host = (self.connection.host or "").strip().rstrip("/")
        if not host:
            return self.api.default_host
        if "://" not in host:
            host = f"{self.connection.schema or 'https'}://{host}"
        if self.connection.port and host.count(":") < 2:
            host = f"{host}:{self.connection.port}"
        return host

    @cached_property
    def token_url(self) -> str:
        """The OAuth token endpoint refreshes go to: extra ``refresh_url`` (formerly ``token_url``), else the
        API's own (:meth:`~fitness_pipeline.apis.OAuthApi.default_token_url`: Strava's under the API root,
        Google's fixed)."""
        return self.extra.get("refresh_url") or self.api.default_token_url(self.base_url)

    @cached_property
    def token_store(self) -> TokenStore:
        if self._token_store is not None:
            return self._token_store
        if self.settings.credential_store_conn_id:
            return PostgresTokenStore(self.settings.credential_store_conn_id)
        return MemoryTokenStore()

    def whose(self) -> str:
        """`` for athlete <id>`` for another athlete than the default one, for messages (an id, never a name)."""
        return "" if self.athlete_id == DEFAULT_ATHLETE_ID else f" for athlete {self.athlete_id}"

    def authorize_again(self) -> str:
        """What to do when the provider refused the refresh token for good: the default athlete's lives in the
        Connection, another athlete's in the token store (``authorize --athlete``)."""
        if self.athlete_id == DEFAULT_ATHLETE_ID:
            return (f"Authorize the app again (python -m fitness_pipeline.authorize {self.conn_type}) and put the new "
                    "refresh token in the Connection's extra.")
        return (f"The athlete authorizes the app again: python -m fitness_pipeline.authorize {self.conn_type} "
                "--athlete NAME (python -m fitness_pipeline.athletes list shows the names).")

    def _refresh_token_from_connection(self) -> str:
        token = self.extra.get("refresh_token")
        if not token:
            raise AuthorizationError(
                f"Connection {self.conn_id!r} has no refresh_token in its extra: authorize the app and add it."
            )
        mask_secret(token)
        return str(token)

    # --- HTTP ----------------------------------------------------------------------------

    def get_conn(self) -> requests.Session:
        """A ``requests.Session`` that retries connection errors, timeouts and 5xx with backoff, each request
        within its deadline (:class:`DeadlineRetry`, extra ``max_request_seconds``)."""
        if self._session is None:
            session = requests.Session()
            retry = DeadlineRetry(
                total=self.settings.max_retries,
                backoff_factor=self.settings.backoff_factor,
                backoff_jitter=self.settings.backoff_factor,
                backoff_max=60,
                status_forcelist=self.retry_statuses,
                allowed_methods=frozenset({"GET"}) | self.idempotent_posts(),
                respect_retry_after_header=True,
                raise_on_status=False,
            )
            session.mount("http://", HTTPAdapter(max_retries=retry))
            session.mount("https://", HTTPAdapter(max_retries=retry))
            session.headers["User-Agent"] = "fitness-pipeline (Apache Airflow)"
            self._session = session
        return self._session

    def idempotent_posts(self) -> frozenset[str]:
        """POSTs that only read (e.g. Google's rollups) may be retried like GETs."""
        return frozenset()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def access_token(self, *, force_refresh: bool = False) -> str:
        """A valid access token, refreshed through the token store only when about to expire."""
        margin = float("inf") if force_refresh else self.token_refresh_margin
        if self._tokens is None or not self._tokens.valid_for(margin):  # the store only when needed
            seed = self._refresh_token_from_connection() if self.athlete_id == DEFAULT_ATHLETE_ID else None
            self._tokens = self.token_store.get_token(token_key(self.conn_type, self.conn_id, self.athlete_id), seed,
                                                      self._refresh, margin)
            mask_secret(self._tokens.access_token)
        return str(self._tokens.access_token)

    def _refresh(self, refresh_token: str) -> TokenSet:
        """Exchange ``refresh_token`` at the token endpoint. Only connection errors are retried:
        a refresh that reached the server may already have rotated the token."""
        session = requests.Session()
        session.mount("http://", HTTPAdapter(max_retries=Retry(total=3, connect=3, read=0, status=0, other=0,
                                                               backoff_factor=0.5, allowed_methods=None)))
        session.mount("https://", session.get_adapter("http://"))
        conn = self.connection
        with session:
            response = session.post(
                self.token_url,
                data={"client_id": conn.login, "client_secret": conn.password,
                      "grant_type": "refresh_token", "refresh_token": refresh_token},
                timeout=self.settings.timeout,
            )
        if response.status_code != 200:
            raise self.token_error(response)
        body = self.json_body(response)
        tokens = self.parse_token_response(body, refresh_token)
        mask_secret(tokens.access_token)
        mask_secret(tokens.refresh_token)
        self.log.info("Refreshed the access token of connection %r; it expires at %s", self.conn_id,
                      tokens.expires_at)
        return tokens

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send an authorized request to ``base_url + path``; returns a successful response or raises."""
        url = f"{self.base_url}{path}"
        session = self.get_conn()
        budget = max_request_seconds(self.extra)
        refreshed = False
        while True:
            try:
                headers = {"Authorization": f"Bearer {self.access_token(force_refresh=refreshed)}"}
            except requests.RequestException as error:  # the token endpoint did not answer
                raise transport_error(error, api=self.api.name, conn_id=self.conn_id, method="POST",
                                      path=urlsplit(self.token_url).path, settings=self.settings) from error
            # after the token (a refresh may wait for a lock): what it reserves is sent at once
            self.before_request()
            started, retry = time.monotonic(), None
            try:
                # each send (with urllib3's retries inside it) gives up once another attempt could not end in time
                adapter = session.get_adapter(url)
                if isinstance(adapter, HTTPAdapter) and isinstance(adapter.max_retries, DeadlineRetry):
                    retry = adapter.max_retries = adapter.max_retries.until(
                        time.monotonic() + budget, sum(self.settings.timeout))
                response = session.request(method, url, headers=headers, timeout=self.settings.timeout, **kwargs)
            except requests.RequestException as error:
                raise transport_error(error, api=self.api.name, conn_id=self.conn_id, method=method,
                                      path=urlsplit(path).path, settings=self.settings, budget=budget,
                                      attempts=retry.progress["attempts"] if retry is not None else None,
                                      deadline_hit=retry is not None and retry.progress["deadline_hit"],
                                      elapsed=time.monotonic() - started) from error
            self.after_response(response)
            if response.status_code == 401 and not refreshed and self.refresh_may_help(response):
                # a token revoked early or a clock skew: one forced refresh, then give up
                refreshed = True
                continue
            if response.status_code == 429:
                self.wait_for_rate_limit(response)
                continue
            if response.status_code >= 400:
                raise self.api_error(response)
            return response

    @staticmethod
    def json_body(response: requests.Response, *, max_bytes: int = 64 * 2**20) -> Any:
        """The decoded JSON body; a clear error (without the body, which may hold personal data) otherwise.

        A body larger than ``max_bytes`` (64 MiB; a page of 200 Strava activities is under 1 MB) or
        nested too deeply for Python's JSON decoder (about its recursion limit, 1,000 levels) fails
        with :class:`FatalApiError`: the same page answers the same on every try (its records stay in
        the lookback), so retries would only spend the rate limit. A body that is not valid JSON is
        :class:`RetriableApiError`: a body cut short or a proxy's error page usually passes.
        """
        import sys

        from fitness_pipeline.transforms.fields import MAX_DEPTH

        endpoint = f"{response.request.method} {response.url.split('?')[0]}"
        size = len(response.content)
        if size > max_bytes:
            raise FatalApiError(
                f"{endpoint} answered {response.status_code} with a body of {size:,} bytes, more than the "
                f"limit of {max_bytes:,} bytes the pipeline decodes; the same request will answer the same on "
                f"every try: look at what this endpoint returns for the window (or shorten the window)",
                status=response.status_code,
            )
        try:
            return response.json()
        except RecursionError:
            raise FatalApiError(
                f"{endpoint} answered {response.status_code} with a JSON body nested deeper than Python's JSON "
                f"decoder can read (its recursion limit, {sys.getrecursionlimit():,} levels; {size:,} bytes); "
                f"the same request will answer the same on every try: find the record in the API (a record "
                f"nested deeper than {MAX_DEPTH} levels is quarantined once the page decodes) and edit or "
                f"delete it there",
                status=response.status_code,
            ) from None
        except ValueError:
            # retriable: a body cut short or a proxy's error page is more often a passing fault than a change of API
            raise RetriableApiError(
                f"{endpoint} answered {response.status_code} with a body "
                f"that is not valid JSON ({size} bytes, "
                f"content-type {response.headers.get('Content-Type')!r})",
                status=response.status_code,
            ) from None

    # --- provider specifics --------------------------------------------------------------

    def refresh_may_help(self, response: requests.Response) -> bool:
        """Whether a 401 might be cured by a new access token (not when a scope is missing)."""
        return True

    def before_request(self) -> None:
        """Called before every request (e.g. to wait out a rate limit already reached)."""

    def after_response(self, response: requests.Response) -> None:
        """Called after every response (e.g. to record rate-limit headers)."""

    def wait_for_rate_limit(self, response: requests.Response) -> None:
        """Sleep until a 429 is over, or raise :class:`RateLimitError`."""
        raise RateLimitError(f"{self.conn_id}: rate limited", dt.datetime.now(dt.UTC), reset_known=False)

    def page_guard(self, what: str) -> PageGuard:
        """A :class:`PageGuard` for one listing of ``what`` (e.g. "the weight listing (/v4/...)")."""
        return PageGuard(self.conn_id, what, self.settings.max_pages, self.base_url)

    def parse_token_response(self, body: Mapping[str, Any], refresh_token: str) -> TokenSet:
        raise NotImplementedError

    def token_error(self, response: requests.Response) -> ApiError:
        raise NotImplementedError

    def api_error(self, response: requests.Response) -> ApiError:
        raise NotImplementedError

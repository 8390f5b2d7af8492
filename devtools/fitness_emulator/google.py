"""Google OAuth token endpoint + a Google Health API v4 subset (the Fitbit successor).

Routes live on :data:`router` (the API as clients see it: ``POST /token`` stands in for
``https://oauth2.googleapis.com/token`` and ``/v4/...`` for
``https://health.googleapis.com/v4/...``), :data:`control_router` (test switches,
mounted under ``/_emulator/google``) and :data:`fitbit_control_router` (the Airflow
connection, under ``/_emulator/fitbit``).  All find their state at
``request.app.state.emulator.google`` (a :class:`GoogleState`).

Data requests check, in this order: injected faults, the access token (401), the
per-minute quota (429), the data type (404), its scope (403), the account link
(400 ``FAILED_PRECONDITION``), then the parameters (400 ``INVALID_ARGUMENT``).

One OAuth client, several users: every user has its own tokens, authorization code and
data points, and ``users/me`` is whoever the bearer token belongs to; the quota, the
run-time settings and the fault switches stay app-wide.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from fitness_emulator.core import (
    Accounts,
    ApiError,
    Faults,
    ServiceState,
    Stats,
    data_response,
    json_bytes,
    json_response,
    optional_int,
    read_json_object,
    read_params,
    status_phrase,
)
from fitness_emulator.google_data import (
    DATA_TYPES,
    MEAL_TYPES,
    SOURCE_FITBIT_MANUAL,
    SOURCE_MFP,
    SOURCE_NAMES,
    SOURCE_SCALE_PASSIVE,
    Bounds,
    HealthStore,
    Point,
    date_json,
    health_profile,
    legacy_user_id,
    make_weight,
    offset_at,
    point_json,
    user_seed,
)
from fitness_emulator.google_push import GooglePush
from fitness_emulator.strava_data import day_number

METRICS_SCOPE = "https://www.googleapis.com/auth/googlehealth.health_metrics_and_measurements.readonly"
NUTRITION_SCOPE = "https://www.googleapis.com/auth/googlehealth.nutrition.readonly"
TYPE_SCOPES = {
    "weight": METRICS_SCOPE,
    "body-fat": METRICS_SCOPE,
    "height": METRICS_SCOPE,
    "nutrition-log": NUTRITION_SCOPE,
}
FILTER_FIELDS = {
    "weight": "weight.sample_time.physical_time",
    "body-fat": "body_fat.sample_time.physical_time",
    "height": "height.sample_time.physical_time",
    "nutrition-log": "nutrition_log.interval.civil_start_time",
}
ROLLUP_TYPES = ("nutrition-log",)
DEFAULT_PAGE_SIZE = 1440
MAX_PAGE_SIZE = 10_000
MAX_ROLLUP_DAYS = 90
RATE_WINDOW_SECONDS = 60
MAX_YEARS = 100  # of data for a user added at run time
SERVICE = "health.googleapis.com"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass
class GoogleSettings:
    """Everything configurable on the Google side (the seed lives in EmulatorSettings)."""

    client_id: str = "demo-google-client-id"
    client_secret: str = "demo-google-client-secret"
    initial_refresh_token: str = "demo-google-refresh-token"
    authorization_code: str = "demo-google-code"
    redirect_uri: str | None = None  # None: any non-empty redirect_uri is accepted
    access_token_ttl: int = 3599
    scopes: tuple[str, ...] = (METRICS_SCOPE, NUTRITION_SCOPE)
    testing_app: bool = False  # refresh tokens die testing_refresh_token_ttl seconds after issue
    testing_refresh_token_ttl: int = 604_800
    rotate_refresh_tokens: bool = False  # normally a refresh returns no new refresh token
    max_page_size: int = MAX_PAGE_SIZE  # the server may return fewer than pageSize (AIP-158)
    listing_faults_data_type: str | None = None  # the listing fault switches hit only this type's listings
    requests_per_minute: int = 300
    account_linked: bool = True
    years: int = 3
    health_user_id: str = "108527364915620845632"
    legacy_user_id: str = "B7K2QX"
    extra_users: int = 0  # more users of the same client at start (ids: see GoogleState.next_user_id)


def google_error(
    code: int,
    message: str,
    *,
    status: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> ApiError:
    body = {"code": code, "message": message, "status": status or RPC_STATUS.get(code, "UNKNOWN")}
    return ApiError(code, {"error": body | {"details": details or []}}, headers)


def error_info(reason: str, domain: str = SERVICE, **metadata: str) -> dict[str, Any]:
    info: dict[str, Any] = {"@type": ERROR_INFO, "reason": reason, "domain": domain}
    if metadata:
        info["metadata"] = metadata
    return info


def invalid_argument(message: str, field: str, reason: str | None = None) -> ApiError:
    details: list[dict[str, Any]] = [
        {"@type": BAD_REQUEST, "fieldViolations": [{"field": field, "description": message}]}
    ]
    if reason:
        details.insert(0, error_info(reason))
    return google_error(400, message, details=details)


def oauth_error(status: int, error: str, description: str) -> ApiError:
    return ApiError(status, {"error": error, "error_description": description})


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class AccessGrant:
    expires_at: int
    scopes: frozenset[str]


@dataclass(frozen=True)
class Consent:
    """What a consent page granted, remembered by its authorization code."""

    scopes: tuple[str, ...]
    redirect_uri: str
    offline: bool  # access_type=offline: only then does the code exchange return a refresh token


class GoogleTokens:
    """One user's Google tokens.

    Every refresh issues a brand-new access token (older ones stay valid until they
    expire); the refresh token is kept unless ``rotate_refresh_tokens`` is on.  In
    ``testing_app`` mode a refresh token dies ``testing_refresh_token_ttl`` seconds
    after it was issued (checked lazily, so flipping the mode at run time applies to
    tokens issued earlier too).  ``refresh_token`` and ``authorization_code`` default
    to the settings' (the default user's).
    """

    def __init__(
        self,
        settings: GoogleSettings,
        clock: Callable[[], float],
        stats: Stats,
        *,
        refresh_token: str | None = None,
        authorization_code: str | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._stats = stats
        self._lock = threading.Lock()
        self.authorization_code = authorization_code or settings.authorization_code
        self.scopes: tuple[str, ...] = tuple(settings.scopes)
        self.testing_app = settings.testing_app
        self.rotate_refresh_tokens = settings.rotate_refresh_tokens
        self.revoked = False  # access removed, until the user consents again
        initial = refresh_token or settings.initial_refresh_token
        self._refresh_tokens: dict[str, float] = {initial: clock()}  # token -> issued at
        self._latest: str | None = initial
        self._grants: dict[str, AccessGrant] = {}
        self._consents: dict[str, Consent] = {}  # authorization code -> its consent
        self._refresh_scopes: dict[str, tuple[str, ...]] = {}  # refresh token -> scopes, if from a consent

    def consent(self, consent: Consent) -> str:
        """The user approved the consent page: an authorization code that remembers ``consent``."""
        with self._lock:
            code = self.authorization_code
            self._consents[code] = consent
            return code

    def grant(self, form: dict[str, str]) -> dict[str, Any]:
        """Answer a POST /token form, or raise ApiError with Google's OAuth error body."""
        if (form.get("client_id"), form.get("client_secret")) != (
            self._settings.client_id,
            self._settings.client_secret,
        ):
            raise oauth_error(401, "invalid_client", "The OAuth client was not found.")
        grant_type = form.get("grant_type", "")
        if grant_type == "refresh_token":
            return self._refresh(form.get("refresh_token", ""))
        if grant_type == "authorization_code":
            return self._exchange_code(form.get("code", ""), form.get("redirect_uri", ""))
        if not grant_type:
            raise oauth_error(400, "unsupported_grant_type", "Invalid grant_type: ")
        raise oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _refresh(self, refresh_token: str) -> dict[str, Any]:
        if not refresh_token:
            raise oauth_error(400, "invalid_request", "Missing required parameter: refresh_token")
        with self._lock:
            now = self._clock()
            if not self._alive(refresh_token, now):
                raise oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
            scopes = self._refresh_scopes.get(refresh_token)
            body = self._issue_access(now, scopes)
            if self.rotate_refresh_tokens:
                del self._refresh_tokens[refresh_token]
                self._refresh_scopes.pop(refresh_token, None)
                refresh_token = self._issue_refresh(now, scopes)
                body["refresh_token"] = refresh_token
            if self.testing_app:
                body["refresh_token_expires_in"] = self._refresh_expires_in(refresh_token, now)
            return body

    def _exchange_code(self, code: str, redirect_uri: str) -> dict[str, Any]:
        if not code:
            raise oauth_error(400, "invalid_request", "Missing required parameter: code")
        if code != self.authorization_code:
            raise oauth_error(400, "invalid_grant", "Malformed auth code.")
        expected = self._settings.redirect_uri
        if not redirect_uri:
            raise oauth_error(400, "invalid_request", "Missing parameter: redirect_uri")
        if expected is not None and redirect_uri != expected:
            raise oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        with self._lock:
            consent = self._consents.get(code)  # None: no consent page seen (direct exchange in tests)
            if consent is not None and redirect_uri != consent.redirect_uri:
                raise oauth_error(400, "redirect_uri_mismatch", "Bad Request")
            now = self._clock()
            scopes = consent.scopes if consent is not None else None
            body = self._issue_access(now, scopes)
            if consent is not None and not consent.offline:
                return body  # access_type=online: no refresh token
            # A new consent adds a refresh token; earlier ones stay valid (as on Google).
            self.revoked = False
            refresh_token = self._issue_refresh(now, scopes)
            body["refresh_token"] = refresh_token
            if self.testing_app:
                body["refresh_token_expires_in"] = self._refresh_expires_in(refresh_token, now)
            return body

    def _alive(self, refresh_token: str, now: float) -> bool:
        issued = self._refresh_tokens.get(refresh_token)
        if issued is None:
            return False
        return not (self.testing_app and now >= issued + self._settings.testing_refresh_token_ttl)

    def _refresh_expires_in(self, refresh_token: str, now: float) -> int:
        # Google reports 604799 right after issue.
        left = self._refresh_tokens[refresh_token] + self._settings.testing_refresh_token_ttl - now
        return max(0, int(left) - 1)

    def _issue_access(self, now: float, scopes: tuple[str, ...] | None = None) -> dict[str, Any]:
        """A new access token with ``scopes`` (those of a consent), by default ``self.scopes``."""
        scopes = self.scopes if scopes is None else scopes
        # Tokens are secrets, not data: secrets module, independent of the seed.
        token = "ya29." + secrets.token_urlsafe(48)
        ttl = self._settings.access_token_ttl
        self._grants[token] = AccessGrant(int(now) + ttl, frozenset(scopes))
        self._stats.incr("google_token_refreshes")
        return {"access_token": token, "expires_in": ttl, "scope": " ".join(scopes), "token_type": "Bearer"}

    def _issue_refresh(self, now: float, scopes: tuple[str, ...] | None = None) -> str:
        token = "1//" + secrets.token_urlsafe(40)
        self._refresh_tokens[token] = now
        if scopes is not None:
            self._refresh_scopes[token] = scopes
        self._latest = token
        return token

    def check(self, access_token: str | None) -> AccessGrant | None:
        """The grant behind a live access token, or None (unknown/expired/revoked)."""
        with self._lock:
            grant = self._grants.get(access_token or "")
            if grant is None or grant.expires_at <= self._clock():
                return None
            return grant

    def issued_refresh_token(self, refresh_token: str) -> bool:
        """Whether this user was ever given ``refresh_token`` and it is not revoked (it may have expired)."""
        with self._lock:
            return refresh_token in self._refresh_tokens

    @property
    def refresh_token(self) -> str | None:
        """The most recently issued refresh token, if it is still alive."""
        with self._lock:
            latest = self._latest
            return latest if latest is not None and self._alive(latest, self._clock()) else None

    def revoke(self) -> None:
        """The user removed access: every access and refresh token dies."""
        with self._lock:
            self._grants.clear()
            self._refresh_tokens.clear()
            self._refresh_scopes.clear()
            self._latest = None
            self.revoked = True


# --------------------------------------------------------------------------- quota


class MinuteQuota:
    """Requests per user per fixed 60 s window aligned to the epoch; rejected ones count too."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._window = -1
            self._used = 0

    def hit(self, now: float) -> bool:
        with self._lock:
            window = int(now // RATE_WINDOW_SECONDS)
            if window != self._window:
                self._window, self._used = window, 0
            self._used += 1
            return self._used <= self.limit


# --------------------------------------------------------------------------- filters and page tokens

_TOKEN_RE = re.compile(
    r"""\s*(?:(?P<string>"[^"]*")|(?P<op>>=|<=|!=|=|>|<|:)|(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<other>[^\s"]+|"))"""
)
_PHYSICAL_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
_CIVIL_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_filter(data_type: str, text: str) -> Bounds:
    """The only filter forms accepted: ``<field> >= "<v>"`` and/or ``<field> < "<v>"``, joined by AND."""
    field = FILTER_FIELDS[data_type]
    civil = data_type == "nutrition-log"
    if not text.strip():
        return Bounds(civil=civil)
    tokens = [(m.lastgroup or "", m.group(m.lastgroup or 0)) for m in _TOKEN_RE.finditer(text) if m.lastgroup]
    lower: float | None = None
    upper: float | None = None
    position = 0

    def fail(problem: str) -> ApiError:
        return invalid_argument(f"Invalid filter {text!r}: {problem}", "filter")

    while True:
        restriction = tokens[position : position + 3]
        position += 3
        if len(restriction) < 3:
            raise fail(f'expected a restriction like {field} >= "..."')
        (kind1, name), (kind2, op), (kind3, value) = restriction
        if kind1 != "word":
            raise fail(f"expected a field name, got {name!r}")
        if name.upper() in ("AND", "OR", "NOT"):
            raise fail(f"unexpected {name!r}")
        if name != field:
            raise fail(_field_problem(data_type, name))
        if kind2 != "op":
            raise fail(f"expected an operator after {name}, got {op!r}")
        if op not in (">=", "<"):
            raise fail(f"operator {op!r} is not supported on {field}; use '>=' (start, inclusive) and '<' (end)")
        if kind3 != "string":
            raise fail(f"the value after {field} {op} must be a double-quoted string, got {value!r}")
        bound = _parse_civil(value[1:-1], fail) if civil else _parse_physical(value[1:-1], fail)
        if op == ">=":
            if lower is not None:
                raise fail(f"more than one '>=' restriction on {field}")
            lower = bound
        else:
            if upper is not None:
                raise fail(f"more than one '<' restriction on {field}")
            upper = bound
        if position == len(tokens):
            return Bounds(lower, upper, civil)
        joiner = tokens[position][1]
        position += 1
        if joiner == "OR":
            raise fail("OR is not supported; only restrictions joined by AND")
        if joiner != "AND":
            raise fail(f"expected AND between restrictions, got {joiner!r} (the keyword is upper case)")
        if position == len(tokens):
            raise fail("the filter ends after AND")


def _field_problem(data_type: str, name: str) -> str:
    field = FILTER_FIELDS[data_type]
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
    if snake != name:
        return f"unknown field {name!r}: filter fields are snake_case, e.g. {field}"
    for other_type, other_field in FILTER_FIELDS.items():
        if other_field == name and other_type != data_type:
            return f"field {name!r} belongs to data type {other_type!r}; for {data_type!r} use {field}"
    return f"unsupported field {name!r} for data type {data_type!r}; supported: {field}"


def _parse_physical(value: str, fail: Callable[[str], ApiError]) -> float:
    if not _PHYSICAL_RE.fullmatch(value):
        raise fail(f'{value!r} is not an RFC 3339 timestamp in UTC, e.g. "2026-09-01T00:00:00Z"')
    try:
        return datetime.fromisoformat(value[:-1] + "+00:00").timestamp()
    except ValueError:
        raise fail(f"{value!r} is not a valid timestamp") from None


def _parse_civil(value: str, fail: Callable[[str], ApiError]) -> float:
    if not _CIVIL_RE.fullmatch(value):
        raise fail(f'{value!r} is not a civil date; use "YYYY-MM-DD", e.g. "2026-09-01"')
    try:
        return day_number(date.fromisoformat(value))
    except ValueError:
        raise fail(f"{value!r} is not a valid date") from None


def _filter_hash(data_type: str, bounds: Bounds) -> str:
    return hashlib.sha256(f"{data_type}|{bounds.key()}".encode()).hexdigest()[:16]


def encode_page_token(data_type: str, bounds: Bounds, offset: int, *, hop: bool = False) -> str:
    """An opaque token for the page at ``offset``; ``hop``: the token of an empty page, different from the
    one that asked for it although it leads to the same offset."""
    fields = [offset, _filter_hash(data_type, bounds)] + ([1] if hop else [])
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(data_type: str, bounds: Bounds, token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        offset, digest, *_ = json.loads(raw)
        if not isinstance(offset, int) or offset < 0 or not isinstance(digest, str):
            raise ValueError
    except (ValueError, TypeError):
        raise invalid_argument("Invalid page token.", "page_token") from None
    if digest != _filter_hash(data_type, bounds):
        raise invalid_argument(
            "Invalid page token: it belongs to a request with a different data type or filter; "
            "send the same filter with every page.",
            "page_token",
        )
    return offset


def parse_page_size(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError:
        raise invalid_argument(f"Invalid value at 'page_size' (TYPE_INT32), {raw!r}", "page_size") from None
    if size < 0:
        raise invalid_argument("page_size must not be negative.", "page_size")
    return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


# --------------------------------------------------------------------------- roll-up


def parse_rollup(body: Any) -> tuple[int, int, int]:
    """(first civil day, end civil day exclusive, window size in days) of a dailyRollUp body."""
    if not isinstance(body, dict):
        raise invalid_argument("Invalid JSON payload received: the body must be an object.", "body")
    days = []
    span = body.get("range")
    for end in ("start", "end"):
        bound = span.get(end) if isinstance(span, dict) else None
        value = bound.get("date") if isinstance(bound, dict) else None
        if not isinstance(value, dict):
            raise invalid_argument(f"range.{end}.date is required.", f"range.{end}.date")
        try:
            parts = [value[k] for k in ("year", "month", "day")]
            if not all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
                raise TypeError
            days.append(day_number(date(*parts)))
        except (KeyError, TypeError, ValueError):
            raise invalid_argument(f"range.{end}.date is not a valid date: {value}", f"range.{end}.date") from None
    window = body.get("windowSizeDays", 1)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise invalid_argument("windowSizeDays must be a positive integer.", "window_size_days")
    first, end = days
    if end <= first:
        raise invalid_argument("range.end must be after range.start.", "range")
    if end - first > MAX_ROLLUP_DAYS:
        raise google_error(
            400,
            f"The requested range spans {end - first} days; dailyRollUp allows at most {MAX_ROLLUP_DAYS} days.",
            details=[error_info("INVALID_ROLLUP_QUERY_DURATION", maxDays=str(MAX_ROLLUP_DAYS))],
        )
    return first, end, window


# --------------------------------------------------------------------------- state

_USER_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class GoogleUser:
    """One user who authorized the client: own tokens, authorization code and data points."""

    id: str  # healthUserId
    legacy_id: str  # legacyUserId (the old Fitbit user id)
    tokens: GoogleTokens
    store: HealthStore

    def summary(self) -> dict[str, Any]:
        return {"user_id": self.id, "points": self.store.counts(), "revoked": self.tokens.revoked}


def parse_user_id(raw: object) -> str:
    """A user id from a query string or JSON value (ValueError otherwise)."""
    value = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
    if not isinstance(value, str) or not _USER_ID_RE.fullmatch(value):
        raise ValueError("expected 1-64 characters of A-Z a-z 0-9 . _ -")
    return value


class GoogleState(ServiceState):
    """Live Google-side state: users (tokens, data points), the app-wide quota and run-time switches.

    ``users`` holds every user of the client; ``tokens`` and ``store`` are the default
    user's (``settings.health_user_id``); ``add_user()`` adds one; ``consent_user`` is
    who is signed in on the consent page.  Run-time switches, app-wide (also settable via
    ``POST /_emulator/google/settings``): ``account_linked``, ``quota.limit`` (requests per
    minute), and on every user's tokens ``scopes`` (granted to tokens issued from now on),
    ``testing_app`` and ``rotate_refresh_tokens``.
    """

    settings: GoogleSettings

    def __init__(
        self,
        settings: GoogleSettings,
        *,
        seed: int,
        clock: Callable[[], float],
        stats: Stats,
        faults: Faults,
    ) -> None:
        super().__init__(settings, seed=seed, clock=clock, stats=stats, faults=faults)
        self.account_linked = settings.account_linked
        self.quota = MinuteQuota(settings.requests_per_minute)  # one for the whole client: all users share it
        default = GoogleUser(
            settings.health_user_id,
            settings.legacy_user_id,
            GoogleTokens(settings, clock, stats),
            HealthStore(seed=seed, years=settings.years, clock=clock),
        )
        self.users: Accounts[str, GoogleUser] = Accounts(
            settings.health_user_id, default, kind="user", parse=parse_user_id
        )
        self.tokens = default.tokens
        self.store = default.store
        self.consent_user = default
        for _ in range(settings.extra_users):
            self.add_user()
        self.push = GooglePush(seed, stats)  # webhook subscribers and notifications (google_push.py)
        stats.declare("google_token_requests", "google_token_refreshes", "google_rate_limited")
        stats.declare_group("google_requests_by_user")

    def next_user_id(self) -> str:
        """The first free id after the default one: ``health_user_id`` + 1, + 2, ... (numeric ids), else
        ``<health_user_id>-1``, ``-2``, ..."""
        default = self.settings.health_user_id
        for k in range(1, len(self.users) + 2):
            candidate = str(int(default) + k) if default.isdigit() else f"{default}-{k}"
            if self.users.get(candidate) is None:
                return candidate
        raise AssertionError("unreachable: more candidates than users")

    def add_user(self, user_id: str | None = None, *, years: int | None = None) -> GoogleUser:
        """Another user authorizes the client: own data (seeded from the seed and the user id), refresh token
        ``<initial_refresh_token>-<id>`` and code ``<authorization_code>-<id>``; the run-time token switches
        are copied from the default user.  ``user_id`` None: :meth:`next_user_id`. ApiError 409 if taken."""
        user_id = self.next_user_id() if user_id is None else user_id
        settings = self.settings
        current = self.users.default.tokens

        def make() -> GoogleUser:
            tokens = GoogleTokens(
                settings,
                self.clock,
                self.stats,
                refresh_token=f"{settings.initial_refresh_token}-{user_id}",
                authorization_code=f"{settings.authorization_code}-{user_id}",
            )
            tokens.scopes, tokens.testing_app = current.scopes, current.testing_app
            tokens.rotate_refresh_tokens = current.rotate_refresh_tokens
            years_of_data = settings.years if years is None else years
            store = HealthStore(seed=user_seed(self.seed, user_id), years=years_of_data, clock=self.clock)
            return GoogleUser(user_id, legacy_user_id(self.seed, user_id), tokens, store)

        return self.users.create(user_id, make)

    def token_owner(self, form: dict[str, str]) -> GoogleUser:
        """The user whose refresh token or authorization code a token request carries; the default user when
        none does (its GoogleTokens then answers with Google's error, exactly as with a single user)."""
        if form.get("grant_type") == "refresh_token":
            token = form.get("refresh_token", "")
            owner = self.users.find(lambda u: bool(token) and u.tokens.issued_refresh_token(token))
        else:
            code = form.get("code")
            owner = self.users.find(lambda u: u.tokens.authorization_code == code)
        return owner or self.users.default

    def connection(self, host: str, user: GoogleUser | None = None) -> dict[str, Any]:
        """The Airflow connection of ``user`` (default: the default user)."""
        tokens = (user or self.users.default).tokens
        return {
            "host": host,
            "login": self.settings.client_id,
            "password": self.settings.client_secret,
            "extra": {"refresh_token": tokens.refresh_token, "refresh_url": f"{host}/token"},
        }

    def settings_view(self) -> dict[str, Any]:
        return {
            "account_linked": self.account_linked,
            "scopes": list(self.tokens.scopes),  # every user's tokens hold the same switches
            "requests_per_minute": self.quota.limit,
            "testing_app": self.tokens.testing_app,
            "rotate_refresh_tokens": self.tokens.rotate_refresh_tokens,
        }

    def update_settings(self, changes: dict[str, Any]) -> None:
        """Partial update; raises ValueError on unknown keys or bad values (nothing applied then)."""
        unknown = set(changes) - set(self.settings_view())
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "scopes":
                scopes = value.split() if isinstance(value, str) else value
                if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                    raise ValueError("scopes must be a list of strings or one space-separated string")
                checked[name] = tuple(scopes)
            elif name == "requests_per_minute":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError("requests_per_minute must be an integer >= 0")
                checked[name] = value
            elif not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
            else:
                checked[name] = value
        for name, value in checked.items():
            if name == "account_linked":
                self.account_linked = value
            elif name == "requests_per_minute":
                self.quota.limit = value
            else:  # scopes, testing_app, rotate_refresh_tokens: app-wide, so on every user's tokens
                for user in self.users.all():
                    setattr(user.tokens, name, value)

    # ---- request guards

    async def apply_faults(self) -> None:
        """Injected failure (raises, Google's error shape) and/or delay before a data request."""
        status = self.faults.take_fail()
        if status is not None:
            self.stats.incr("faults_injected")
            raise google_error(status, _fault_message(status))
        delay = self.faults.take_slow()
        if delay > 0:
            self.stats.incr("faults_injected")
            await asyncio.sleep(delay)

    def _access_owner(self, access_token: str) -> tuple[GoogleUser, AccessGrant] | None:
        """The user holding a live ``access_token`` and its grant (tokens are random: at most one)."""
        for user in self.users.all() if access_token else ():
            grant = user.tokens.check(access_token)
            if grant is not None:
                return user, grant
        return None

    def authorize(self, request: Request) -> tuple[GoogleUser, AccessGrant]:
        """The user behind the bearer token (``users/me``) and its grant, or Google's 401."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        found = self._access_owner(token.strip()) if scheme.lower() == "bearer" else None
        if found is None:
            reason = "ACCESS_TOKEN_EXPIRED" if token.strip() else "CREDENTIALS_MISSING"
            raise google_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                "or other valid authentication credential.",
                details=[error_info(reason, "googleapis.com")],
                headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
            )
        user, grant = found
        self.stats.count_in("google_requests_by_user", user.id)
        return user, grant

    def count_quota(self) -> None:
        limited = self.faults.take("rate_limit_next")
        if limited:
            self.stats.incr("faults_injected")
        if limited or not self.quota.hit(self.clock()):
            self.stats.incr("google_rate_limited")
            limit = str(self.quota.limit)
            raise google_error(
                429,
                "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per user' "
                f"of service '{SERVICE}'.",
                details=[
                    error_info(
                        "RATE_LIMIT_EXCEEDED",
                        "googleapis.com",
                        service=SERVICE,
                        quota_metric=f"{SERVICE}/read_requests",
                        quota_limit="ReadRequestsPerMinutePerUser",
                        quota_limit_value=limit,
                    )
                ],
                headers={"Retry-After": str(self.faults.retry_after_seconds)} if limited else None,
            )

    def check_data_type(self, data_type: str, grant: AccessGrant) -> None:
        if data_type not in DATA_TYPES:
            raise google_error(
                404,
                f"Data type '{data_type}' was not found. Supported here: {', '.join(DATA_TYPES)}.",
                status="RESOURCE_NOT_FOUND",
                details=[error_info("RESOURCE_NOT_FOUND")],
            )
        scope = TYPE_SCOPES[data_type]
        if scope not in grant.scopes:
            raise google_error(
                403,
                f"Request had insufficient authentication scopes. Missing scope: {scope}",
                details=[error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT", "googleapis.com", service=SERVICE)],
            )

    def check_linked(self) -> None:
        if not self.account_linked:
            raise google_error(
                400,
                "The user has no linked health account; the user has to link it in the Fitbit app first.",
                status="FAILED_PRECONDITION",
                details=[error_info("ACCOUNT_NOT_LINKED")],
            )

    async def guard(self, request: Request, data_type: str | None = None) -> GoogleUser:
        """Every check of a data request, in order; the user (``users/me``) the request may read."""
        await self.apply_faults()
        user, grant = self.authorize(request)
        self.count_quota()
        if data_type is not None:
            self.check_data_type(data_type, grant)
        self.check_linked()
        return user

    def respond(self, payload: Any) -> Response:
        return data_response(self.faults, self.stats, json_bytes(payload))

    # ---- API bodies

    def list_page(self, user: GoogleUser, data_type: str, query: dict[str, str]) -> dict[str, Any]:
        bounds = parse_filter(data_type, query.get("filter", ""))
        size = parse_page_size(query.get("pageSize", query.get("page_size")))
        size = min(size, self.settings.max_page_size)
        token = query.get("pageToken", query.get("page_token", ""))
        offset = decode_page_token(data_type, bounds, token) if token else 0
        items = user.store.listed(data_type, bounds)[offset : offset + size]
        page: dict[str, Any] = {}
        only = self.settings.listing_faults_data_type
        # AIP-158 allows an empty page with a token to go on
        if items and only in (None, data_type) and self.faults.take("empty_page_next"):
            self.stats.incr("faults_injected")
            return {"nextPageToken": encode_page_token(data_type, bounds, offset, hop=True)}
        if items:  # proto3 JSON: an empty list is left out, hence a bare {}
            page["dataPoints"] = [point_json(p, user.id) for p in items]
        if len(items) == size:  # no look-ahead: a full last page is followed by {}
            page["nextPageToken"] = encode_page_token(data_type, bounds, offset + size)
        self._change_during_listing(user.store, items, bounds)
        return page

    def _change_during_listing(self, store: HealthStore, served: list[Point], bounds: Bounds) -> None:
        """The listing faults that are real changes, made once ``served`` is answered (newest first): the
        user deletes its first point (every later one moves one place back, across page boundaries), or
        weighs in just after it (every later one moves one place on)."""
        only = self.settings.listing_faults_data_type
        if not served or only not in (None, served[0].data_type):
            return
        first = served[0]
        if self.faults.take("listing_delete_next"):
            self.stats.incr("faults_injected")
            store.delete(first.id, first.data_type)
        elif self.faults.take("listing_insert_next"):
            moment = first.time + 1
            if first.data_type == "weight" and moment <= self.clock() and (
                    bounds.upper is None or bounds.civil or moment < bounds.upper):
                self.stats.incr("faults_injected")
                make_weight(store, epoch=moment, offset=first.offset, grams=int(first.value),
                            source=first.source)

    def rollup(self, user: GoogleUser, data_type: str, body: Any) -> dict[str, Any]:
        if data_type not in ROLLUP_TYPES:
            raise invalid_argument(f"dailyRollUp is not supported for data type '{data_type}' here.", "data_type")
        first, end, window = parse_rollup(body)
        kcal = user.store.daily_kcal(first, end)
        points = []
        for start in range(first, end, window):
            stop = min(start + window, end)
            days = [kcal[d] for d in range(start, stop) if d in kcal]
            if days:  # days (windows) without logs are omitted, not zero
                points.append(
                    {
                        "civilStartTime": {"date": date_json(start)},
                        "civilEndTime": {"date": date_json(stop)},
                        "nutritionLog": {"energy": {"kcalSum": round(sum(days), 1)}},
                    }
                )
        points.reverse()  # newest first
        return {"rollupDataPoints": points} if points else {}


def _fault_message(status: int) -> str:
    if status == 503:
        return "The service is currently unavailable."
    if status == 429:
        return "Resource has been exhausted (e.g. check quota)."
    return status_phrase(status)


# --------------------------------------------------------------------------- routes


def _google(request: Request) -> GoogleState:
    state: GoogleState = request.app.state.emulator.google
    return state


async def read_token_form(request: Request) -> dict[str, str]:
    return await read_params(request, lambda: oauth_error(400, "invalid_request", "Invalid JSON payload."))


router = APIRouter()


@router.post("/token")
async def token(request: Request) -> Response:
    google = _google(request)
    google.stats.incr("google_token_requests")
    status = google.faults.take_token_fail()
    if status is not None:
        google.stats.incr("faults_injected")
        error = "temporarily_unavailable" if status == 503 else "server_error"
        raise oauth_error(status, error, status_phrase(status))
    form = await read_token_form(request)
    body = google.token_owner(form).tokens.grant(form)
    if google.faults.take("token_rotate_fail_next"):  # granted (rotated, if rotation is on), the answer lost
        google.stats.incr("faults_injected")
        status = google.faults.token_fail_status
        raise oauth_error(status, "server_error", status_phrase(status))
    return json_response(body, headers={"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"})


@router.get("/o/oauth2/v2/auth")
async def authorize(request: Request) -> Response:
    """The consent page (stands in for ``https://accounts.google.com/o/oauth2/v2/auth``), answered at
    once: 302 to ``redirect_uri`` with ``state``, ``code`` and the granted ``scope`` (requested ∩
    ``tokens.scopes``: what the user leaves ticked), or ``error=access_denied`` when ``consent_denied``.
    The code is that of ``consent_user`` (who is signed in on Google).
    An unknown client or a bad redirect_uri gets an error page and no redirect, as on Google."""
    google = _google(request)
    query = dict(request.query_params)
    if query.get("client_id") != google.settings.client_id:
        raise oauth_error(401, "invalid_client", "The OAuth client was not found.")
    redirect_uri = query.get("redirect_uri", "")
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise oauth_error(400, "invalid_request", "Missing or invalid parameter: redirect_uri")
    expected = google.settings.redirect_uri
    if expected is not None and redirect_uri != expected:
        raise oauth_error(400, "redirect_uri_mismatch", "Bad Request")
    requested = (query.get("scope") or "").split()
    if not requested:
        raise oauth_error(400, "invalid_request", "Missing required parameter: scope")
    params = {"state": query["state"]} if "state" in query else {}
    if query.get("response_type") != "code":
        params["error"] = "unsupported_response_type"
    elif google.consent_denied:
        params["error"] = "access_denied"
    else:
        tokens = google.consent_user.tokens
        granted = tuple(s for s in requested if s in tokens.scopes)
        offline = query.get("access_type") == "offline"
        params["code"] = tokens.consent(Consent(granted, redirect_uri, offline))
        params["scope"] = " ".join(granted)
    separator = "&" if parts.query else "?"
    return RedirectResponse(f"{redirect_uri}{separator}{urlencode(params)}", status_code=302)


@router.get("/v4/users/me/identity")
async def identity(request: Request) -> Response:
    google = _google(request)
    user = await google.guard(request)
    return google.respond({"name": "users/me/identity", "healthUserId": user.id, "legacyUserId": user.legacy_id})


@router.get("/v4/users/me/dataTypes/{data_type}/dataPoints")
async def list_data_points(data_type: str, request: Request) -> Response:
    google = _google(request)
    user = await google.guard(request, data_type)
    return google.respond(google.list_page(user, data_type, dict(request.query_params)))


@router.post("/v4/users/me/dataTypes/{data_type}/dataPoints:dailyRollUp")
async def daily_roll_up(data_type: str, request: Request) -> Response:
    google = _google(request)
    user = await google.guard(request, data_type)
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise invalid_argument("Invalid JSON payload received.", "body") from None
    return google.respond(google.rollup(user, data_type, body))


# --------------------------------------------------------------------------- control


control_router = APIRouter()
fitbit_control_router = APIRouter()


def _user(request: Request) -> GoogleUser:
    """The user a control request names with ``?user_id=`` (default: the default user); 400/404."""
    return _google(request).users.from_query(request)


@control_router.post("/users")
async def create_user(request: Request) -> Response:
    """Another user authorizes the client: ``{"user_id"?: str, "years"?: int}`` → 201 ``{"user_id",
    "refresh_token", "authorization_code"}``; 409 if the user exists."""
    google = _google(request)
    body = await read_json_object(request)
    if set(body) - {"user_id", "years"}:
        raise ApiError(400, {"message": 'expected {"user_id"?: string, "years"?: integer}'})
    years = optional_int(body, "years", MAX_YEARS)
    user_id = None if body.get("user_id") is None else google.users.parse(body["user_id"])
    user = google.add_user(user_id, years=years)
    return json_response(
        {"user_id": user.id, "refresh_token": user.tokens.refresh_token,
         "authorization_code": user.tokens.authorization_code},
        status=201,
    )


@control_router.get("/users")
async def list_users(request: Request) -> Response:
    """``{"users": [{"user_id", "points": {data type: count listed now}, "revoked"}, ...]}``, default first."""
    return json_response({"users": [u.summary() for u in _google(request).users.all()]})


@fitbit_control_router.get("/connection")
@control_router.get("/connection")
async def connection(request: Request) -> Response:
    """The Airflow connection; ``?user_id=`` gives that user's current refresh token."""
    user = _user(request)
    return json_response(_google(request).connection(str(request.base_url).rstrip("/"), user))


@control_router.post("/revoke")
async def revoke(request: Request) -> Response:
    """The user removes the client's access; the other users keep working."""
    _user(request).tokens.revoke()
    return json_response({"revoked": True})


@control_router.get("/settings")
async def get_settings(request: Request) -> Response:
    return json_response(_google(request).settings_view())


@control_router.post("/settings")
async def set_settings(request: Request) -> Response:
    """E.g. ``{"account_linked": false, "scopes": [...], "requests_per_minute": 5, "testing_app": true}``."""
    google = _google(request)
    try:
        google.update_settings(await read_json_object(request))
    except ValueError as error:
        raise ApiError(400, {"message": str(error)}) from None
    return json_response(google.settings_view())


@control_router.post("/consent")
async def set_consent(request: Request) -> Response:
    """``{"user_id"?: str, "deny"?: true}``: who is signed in on the consent page (default: the default user);
    ``deny``: the user presses "Cancel". (Unticked scopes: ``/settings``.)"""
    google = _google(request)
    body = await read_json_object(request)
    user = google.users.require(body.get("user_id"))
    deny = body.get("deny", google.consent_denied)
    if not isinstance(deny, bool) or set(body) - {"deny", "user_id"}:
        raise ApiError(400, {"message": "expected {\"user_id\"?: string, \"deny\"?: boolean}"})
    google.consent_denied, google.consent_user = deny, user
    return json_response({"deny": deny, "user_id": user.id})


@control_router.delete("/rate-limits")
async def reset_rate_limits(request: Request) -> Response:
    _google(request).quota.reset()
    return Response(status_code=204)


@control_router.post("/weight")
async def add_weight(request: Request) -> Response:
    """``{"physicalTime": "...Z", "utcOffset": -25200, "grams": 90200, "bodyFatPercentage"?: 21.4,
    "recordingMethod"?: "MANUAL", "platform"?: "FITBIT"}`` → 201 with the new items (``?user_id=``'s)."""
    user = _user(request)
    body = await read_json_object(request)
    try:
        moment = datetime.fromisoformat(str(body["physicalTime"]).replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        offset = body.get("utcOffset", 0)
        if isinstance(offset, str):
            offset = int(offset.removesuffix("s"))
        grams = body["grams"]
        fat = body.get("bodyFatPercentage")
        if isinstance(grams, bool) or not isinstance(grams, int | float) or grams <= 0:
            raise ValueError("grams must be a positive number")
        if fat is not None and (isinstance(fat, bool) or not isinstance(fat, int | float) or not 0 <= fat <= 100):
            raise ValueError("bodyFatPercentage must be a number in 0-100")
        if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > 18 * 3600:
            raise ValueError("utcOffset must be seconds (int or '3600s') within ±18 h")
        key = (body.get("recordingMethod", "PASSIVELY_MEASURED"), body.get("platform", "FITBIT"))
        if key not in SOURCE_NAMES:
            raise ValueError(f"unsupported recordingMethod/platform {key}; known: {sorted(SOURCE_NAMES)}")
    except KeyError as missing:
        raise ApiError(400, {"message": f"{missing.args[0]} is required"}) from None
    except (TypeError, ValueError) as error:
        raise ApiError(400, {"message": str(error)}) from None
    points = make_weight(
        user.store,
        epoch=int(moment.timestamp()),
        offset=offset,
        grams=round(grams),
        body_fat=fat,
        source=SOURCE_NAMES.get(key, SOURCE_SCALE_PASSIVE),
    )
    created = {"weight": point_json(points[0], user.id)}
    if len(points) > 1:
        created["bodyFat"] = point_json(points[1], user.id)
    _google(request).push.notify(user.id, "UPSERT", points)
    return json_response(created, status=201)


def _instant(body: dict[str, Any], name: str) -> int:
    """Epoch seconds of the RFC 3339 time ``body[name]`` (UTC when it has no offset); KeyError/ValueError."""
    moment = datetime.fromisoformat(str(body[name]).replace("Z", "+00:00"))
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


def _offset(body: dict[str, Any], name: str, user: GoogleUser, epoch: int) -> int:
    """``body[name]`` (seconds, int or ``"3600s"``), by default the offset of the user's modelled time zone."""
    if body.get(name) is None:
        day = datetime.fromtimestamp(epoch, UTC).date()
        return offset_at(epoch, health_profile(user.store.seed).tz_on(day))
    offset = body[name]
    if isinstance(offset, str):
        offset = int(offset.removesuffix("s"))
    if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > 18 * 3600:
        raise ValueError(f"{name} must be seconds (int or '3600s') within ±18 h")
    return offset


def _positive(body: dict[str, Any], name: str) -> float:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be a positive number")
    return float(value)


@control_router.post("/nutrition")
async def add_nutrition(request: Request) -> Response:
    """``{"startTime": "...Z", "endTime"?: "...Z" (start + 15 min), "utcOffset"?: seconds (default: the user's
    time zone then), "kcal": 640, "mealType"?: "DINNER", "foodDisplayName"?: "..."}`` → 201 ``{"nutritionLog":
    item}`` (``?user_id=``'s); counted in that civil day's roll-up."""
    user = _user(request)
    body = await read_json_object(request)
    try:
        start = _instant(body, "startTime")
        end = _instant(body, "endTime") if body.get("endTime") is not None else start + 900
        if end < start:
            raise ValueError("endTime must not be before startTime")
        offset = _offset(body, "utcOffset", user, start)
        kcal = _positive(body, "kcal")
        meal = body.get("mealType", "SNACK")
        food = body.get("foodDisplayName", "Snack")
        if meal not in MEAL_TYPES or not isinstance(food, str) or not food:
            raise ValueError(f"mealType must be one of {MEAL_TYPES} and foodDisplayName a non-empty string")
    except KeyError as missing:
        raise ApiError(400, {"message": f"{missing.args[0]} is required"}) from None
    except (TypeError, ValueError) as error:
        raise ApiError(400, {"message": str(error)}) from None
    point = user.store.add(Point(user.store.new_id(), "nutrition-log", start, offset, round(kcal, 1), SOURCE_MFP,
                                 end, offset, meal, food))
    _google(request).push.notify(user.id, "UPSERT", [point])
    return json_response({"nutritionLog": point_json(point, user.id)}, status=201)


@control_router.post("/height")
async def add_height(request: Request) -> Response:
    """``{"physicalTime": "...Z", "utcOffset"?: seconds (default: the user's time zone then), "millimeters":
    1776}`` → 201 ``{"height": item}`` (``?user_id=``'s)."""
    user = _user(request)
    body = await read_json_object(request)
    try:
        moment = _instant(body, "physicalTime")
        offset = _offset(body, "utcOffset", user, moment)
        millimetres = round(_positive(body, "millimeters"))
    except KeyError as missing:
        raise ApiError(400, {"message": f"{missing.args[0]} is required"}) from None
    except (TypeError, ValueError) as error:
        raise ApiError(400, {"message": str(error)}) from None
    point = user.store.add(Point(user.store.new_id(), "height", moment, offset, millimetres, SOURCE_FITBIT_MANUAL))
    _google(request).push.notify(user.id, "UPSERT", [point])
    return json_response({"height": point_json(point, user.id)}, status=201)


@control_router.delete("/dataPoints/{data_type}/{point_id}")
async def delete_data_point(data_type: str, point_id: str, request: Request) -> Response:
    """The point simply vanishes from listings (no tombstone, no change feed when polling; a subscriber of
    the data type is notified)."""
    try:
        numeric = int(point_id)
    except ValueError:
        numeric = -1
    user = _user(request)
    point = user.store.get(numeric)
    if point is None or not user.store.delete(numeric, data_type):
        raise ApiError(404, {"message": "Record Not Found", "dataType": data_type, "id": point_id})
    _google(request).push.notify(user.id, "DELETE", [point])
    return Response(status_code=204)

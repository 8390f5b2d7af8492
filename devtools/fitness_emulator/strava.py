"""Strava API v3 emulation: OAuth token endpoint, activity listing, rate limits.

Routes live on :data:`router` (the API as clients see it) and :data:`control_router`
(test switches, mounted under ``/_emulator/strava``).  Both find their state at
``request.app.state.emulator.strava`` (a :class:`StravaState`).

One application, several athletes (as on Strava): every athlete has its own tokens,
authorization code and activities; a token only ever reads its own athlete's data,
while the rate limits and fault switches are shared by the whole application.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
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
    apply_data_faults,
    data_response,
    json_bytes,
    json_response,
    optional_int,
    read_json_object,
    read_params,
    status_phrase,
)
from fitness_emulator.strava_data import (
    DEFAULT_ATHLETE_ID,
    MAX_ACTIVITIES,
    MAX_ATHLETE_ID,
    ActivityStore,
    athlete_id_bases,
    athlete_seed,
    detailed_activity,
    parse_iso_utc,
)
from fitness_emulator.strava_push import PushError, StravaPush

MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 30
MAX_EPOCH_SECONDS = 10_000_000_000  # above this the value is milliseconds
MAX_YEARS = 100  # of history for an athlete added at run time
KNOWN_SCOPES = frozenset({"read", "read_all", "profile:read_all", "profile:write", "activity:read",
                          "activity:read_all", "activity:write"})


@dataclass
class StravaSettings:
    """Everything configurable on the Strava side (the seed lives in EmulatorSettings)."""

    athlete_id: int = DEFAULT_ATHLETE_ID
    years: int = 5
    activities: int | None = None  # exactly N activities ending now (benchmark athlete)
    client_id: str = "demo-client-id"
    client_secret: str = "demo-client-secret"
    initial_refresh_token: str = "demo-refresh-token"
    authorization_code: str = "demo-code"
    scope: str = "read,activity:read_all"
    access_token_ttl: int = 21600
    same_token_min_remaining: int = 3600
    rotate_refresh_tokens: bool = True
    overall_limit: tuple[int, int] = (200, 2000)  # (per window, per UTC day)
    read_limit: tuple[int, int] = (100, 1000)
    rate_window_seconds: int = 900
    short_page_every: int = 0  # every Nth page drops up to 2 items after slicing
    max_per_page: int = MAX_PER_PAGE  # a smaller cap makes short histories span many pages in tests
    extra_athletes: int = 0  # more athletes of the same application at start: athlete_id+1 .. athlete_id+N


def strava_error(status: int, message: str, resource: str, field: str, code: str) -> ApiError:
    return ApiError(status, {"message": message, "errors": [{"resource": resource, "field": field, "code": code}]})


def bad_request(resource: str, field: str) -> ApiError:
    return strava_error(400, "Bad Request", resource, field, "invalid")


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class AccessGrant:
    expires_at: int
    scope: str

    def scopes(self) -> set[str]:
        return {s.strip() for s in self.scope.split(",") if s.strip()}


class TokenStore:
    """One athlete's tokens, with Strava's rotation rules.

    Old access tokens stay valid until they expire (as on Strava); an old refresh
    token dies the moment a new one is issued.  ``athlete_id``, ``refresh_token`` and
    ``authorization_code`` default to the settings' (the default athlete's).
    """

    def __init__(
        self,
        settings: StravaSettings,
        clock: Callable[[], float],
        stats: Stats,
        *,
        athlete_id: int | None = None,
        refresh_token: str | None = None,
        authorization_code: str | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._stats = stats
        self._lock = threading.Lock()
        self.athlete_id = settings.athlete_id if athlete_id is None else athlete_id
        self.authorization_code = authorization_code or settings.authorization_code
        self.scope = settings.scope
        self.refresh_token: str | None = refresh_token or settings.initial_refresh_token
        self.revoked = False  # deauthorized, until the athlete consents again
        self.access_token: str | None = None
        self._grants: dict[str, AccessGrant] = {}
        self._code_scopes: dict[str, str] = {}  # authorization code -> scope granted on the consent page
        self._refresh_scope: str | None = None  # scope of the refresh token, when it came from a consent

    def consent(self, granted_scope: str) -> str:
        """The athlete approved the consent page with ``granted_scope`` ticked: an authorization code
        that remembers it (tokens from that code, and their refreshes, carry that scope)."""
        with self._lock:
            code = self.authorization_code
            self._code_scopes[code] = granted_scope
            return code

    def grant(self, form: dict[str, str]) -> dict[str, Any]:
        """Answer a POST /oauth/token form, or raise ApiError with Strava's body."""
        expected = (self._settings.client_id, self._settings.client_secret)
        if (form.get("client_id"), form.get("client_secret")) != expected:
            raise strava_error(401, "Bad Request", "Application", "client_id", "invalid")
        grant_type = form.get("grant_type")
        if grant_type == "refresh_token":
            return self._refresh(form.get("refresh_token", ""))
        if grant_type == "authorization_code":
            return self._exchange_code(form.get("code", ""))
        raise bad_request("Application", "grant_type")

    def _refresh(self, refresh_token: str) -> dict[str, Any]:
        with self._lock:
            if not refresh_token or refresh_token != self.refresh_token:
                raise bad_request("RefreshToken", "refresh_token")
            now = int(self._clock())
            current = self._grants.get(self.access_token or "")
            if current is not None and current.expires_at - now > self._settings.same_token_min_remaining:
                return self._token_body(now)
            self._issue(now, new_refresh=self._settings.rotate_refresh_tokens)
            return self._token_body(now)

    def _exchange_code(self, code: str) -> dict[str, Any]:
        with self._lock:
            if code != self.authorization_code:
                raise bad_request("AuthorizationCode", "code")
            now = int(self._clock())
            self._refresh_scope = self._code_scopes.get(code)  # None: no consent page seen, tokens get .scope
            self.revoked = False
            self._issue(now, new_refresh=True)
            body = self._token_body(now)
        body["athlete"] = {
            "id": self.athlete_id,
            "resource_state": 2,
            "firstname": "Demo",
            "lastname": "Athlete",
        }
        return body

    def _issue(self, now: int, *, new_refresh: bool) -> None:
        # Tokens are secrets, not data: secrets module, independent of the seed.
        self.access_token = secrets.token_hex(20)
        scope = self.scope if self._refresh_scope is None else self._refresh_scope
        self._grants[self.access_token] = AccessGrant(now + self._settings.access_token_ttl, scope)
        if new_refresh or self.refresh_token is None:
            self.refresh_token = secrets.token_hex(20)
        self._stats.incr("token_refreshes")

    def _token_body(self, now: int) -> dict[str, Any]:
        grant = self._grants[self.access_token or ""]
        return {
            "token_type": "Bearer",
            "access_token": self.access_token,
            "expires_at": grant.expires_at,
            "expires_in": max(0, grant.expires_at - now),
            "refresh_token": self.refresh_token,
        }

    def check(self, access_token: str | None) -> AccessGrant | None:
        """The grant behind a live access token, or None (unknown/expired/revoked)."""
        with self._lock:
            grant = self._grants.get(access_token or "")
            if grant is None or grant.expires_at <= self._clock():
                return None
            return grant

    def revoke(self) -> None:
        """Deauthorize: every access token and the refresh token die."""
        with self._lock:
            self._grants.clear()
            self.access_token = None
            self.refresh_token = None
            self._refresh_scope = None
            self.revoked = True


# --------------------------------------------------------------------------- rate limits


class RateLimiter:
    """Strava's two buckets (overall, read), each per window and per UTC day.

    Windows are aligned to multiples of the window length since the epoch, the day to
    UTC midnight.  Rejected requests still count, like on Strava.
    """

    def __init__(self, settings: StravaSettings) -> None:
        self.overall_limit = settings.overall_limit
        self.read_limit = settings.read_limit
        self.window_seconds = settings.rate_window_seconds
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._window = self._day = -1
        self._usage = {"overall": [0, 0], "read": [0, 0]}  # [window, day]

    def hit(self, now: float, *, read: bool = True, spent: str | None = None) -> tuple[bool, dict[str, str]]:
        """Count one request; returns (allowed, the X-RateLimit headers). ``spent``: other clients of the same
        application used up the read limit of "day" (until UTC midnight), or of "window": this request is
        refused with headers that show the window full, the window's count itself left alone (a test that
        freezes the emulator's clock would otherwise never see the next window)."""
        with self._lock:
            self._roll(now)
            if spent == "day":
                self._usage["read"][1] = max(self._usage["read"][1], self.read_limit[1])
            buckets = ("overall", "read") if read else ("overall",)
            for bucket in buckets:
                self._usage[bucket][0] += 1
                self._usage[bucket][1] += 1
            over = self._over("overall", self.overall_limit) or (read and self._over("read", self.read_limit))
            headers = self._headers()
            if spent == "window":
                usage = self._usage["read"]
                headers["X-ReadRateLimit-Usage"] = f"{max(usage[0], self.read_limit[0] + 1)},{usage[1]}"
                over = True
            return not over, headers

    def _roll(self, now: float) -> None:
        window, day = int(now // self.window_seconds), int(now // 86400)
        if window != self._window:
            self._window = window
            for usage in self._usage.values():
                usage[0] = 0
        if day != self._day:
            self._day = day
            for usage in self._usage.values():
                usage[1] = 0

    def _over(self, bucket: str, limit: tuple[int, int]) -> bool:
        usage = self._usage[bucket]
        return usage[0] > limit[0] or usage[1] > limit[1]

    def _headers(self) -> dict[str, str]:
        def pair(values: tuple[int, int] | list[int]) -> str:
            return f"{values[0]},{values[1]}"

        return {
            "X-RateLimit-Limit": pair(self.overall_limit),
            "X-RateLimit-Usage": pair(self._usage["overall"]),
            "X-ReadRateLimit-Limit": pair(self.read_limit),
            "X-ReadRateLimit-Usage": pair(self._usage["read"]),
        }


# --------------------------------------------------------------------------- state


def add_late_upload(store: ActivityStore, start_date: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Add a late upload to ``store``; ``fields`` may hold sport_type, name, id and any overrides."""
    extra = dict(fields)
    return store.add(
        parse_iso_utc(start_date),
        sport_type=extra.pop("sport_type", None),
        name=extra.pop("name", None),
        activity_id=extra.pop("id", None),
        extra=extra,
    )


@dataclass(frozen=True)
class Athlete:
    """One athlete who authorized the application: own tokens, authorization code and activities."""

    id: int
    tokens: TokenStore
    activities: ActivityStore

    def summary(self) -> dict[str, Any]:
        return {"athlete_id": self.id, "activities": self.activities.listed_count(), "revoked": self.tokens.revoked}


def parse_athlete_id(raw: object) -> int:
    """An athlete id from a query string or JSON value (ValueError otherwise)."""
    value = int(raw) if isinstance(raw, str) else raw
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATHLETE_ID:
        raise ValueError(f"expected an integer in 1..{MAX_ATHLETE_ID}")
    return value


class StravaState(ServiceState):
    """Live Strava-side state: athletes (tokens, activities), the app-wide rate limiter and switches.

    ``athletes`` holds every athlete of the application; ``tokens`` and ``activities`` are
    the default athlete's (``settings.athlete_id``), as are the test helpers
    ``find_activity(predicate)``, ``find_activities(predicate)`` and ``add_activity``.
    Also: ``activities.get(id)``, ``activities.iter_listed()``, ``tokens.revoke()``,
    ``add_athlete(id)``, and the plain attributes ``short_page_every``,
    ``tokens.scope`` (scope granted to tokens issued from now on) and
    ``consent_athlete`` (who is logged in on the consent page).
    """

    settings: StravaSettings

    def __init__(
        self,
        settings: StravaSettings,
        *,
        seed: int,
        clock: Callable[[], float],
        stats: Stats,
        faults: Faults,
    ) -> None:
        super().__init__(settings, seed=seed, clock=clock, stats=stats, faults=faults)
        self.short_page_every = settings.short_page_every
        self.rate_limiter = RateLimiter(settings)  # one for the whole application: all athletes share it
        default = Athlete(
            settings.athlete_id,
            TokenStore(settings, clock, stats),
            ActivityStore(
                seed=seed,
                athlete_id=settings.athlete_id,
                years=settings.years,
                activities=settings.activities,
                clock=clock,
            ),
        )
        self.athletes: Accounts[int, Athlete] = Accounts(
            settings.athlete_id, default, kind="athlete", parse=parse_athlete_id
        )
        self.tokens = default.tokens
        self.activities = default.activities
        self.consent_athlete = default
        #: the application's push subscription and its event deliveries
        self.push = StravaPush(client_id=settings.client_id, client_secret=settings.client_secret, seed=seed,
                               clock=clock)
        for offset in range(1, settings.extra_athletes + 1):
            self.add_athlete(settings.athlete_id + offset)
        stats.declare("token_requests", "token_refreshes", "rate_limited")
        stats.declare_group("requests_by_athlete")

    def add_athlete(self, athlete_id: int, *, years: int | None = None, activities: int | None = None) -> Athlete:
        """Another athlete authorizes the application: own data (seeded from the seed and ``athlete_id``, ids in
        its own range), refresh token ``<initial_refresh_token>-<id>`` and code ``<authorization_code>-<id>``.
        ``years``/``activities`` default to the settings'; ApiError 409 if the id exists."""
        settings = self.settings
        id_base, late_id_base = athlete_id_bases(athlete_id)

        def make() -> Athlete:
            tokens = TokenStore(
                settings,
                self.clock,
                self.stats,
                athlete_id=athlete_id,
                refresh_token=f"{settings.initial_refresh_token}-{athlete_id}",
                authorization_code=f"{settings.authorization_code}-{athlete_id}",
            )
            store = ActivityStore(
                seed=athlete_seed(self.seed, athlete_id),
                athlete_id=athlete_id,
                years=settings.years if years is None else years,
                activities=settings.activities if activities is None else activities,
                clock=self.clock,
                id_base=id_base,
                late_id_base=late_id_base,
            )
            return Athlete(athlete_id, tokens, store)

        return self.athletes.create(athlete_id, make)

    def token_owner(self, form: dict[str, str]) -> Athlete:
        """The athlete whose refresh token or authorization code a token request carries; the default athlete
        when none does (its TokenStore then answers with Strava's error, exactly as with a single athlete)."""
        if form.get("grant_type") == "refresh_token":
            token = form.get("refresh_token")
            owner = self.athletes.find(lambda a: bool(token) and a.tokens.refresh_token == token)
        else:
            code = form.get("code")
            owner = self.athletes.find(lambda a: a.tokens.authorization_code == code)
        return owner or self.athletes.default

    def find_activity(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """First listed activity (oldest first) for which ``predicate`` is true."""
        return self.activities.find_activity(predicate)

    def find_activities(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """All listed activities (oldest first) for which ``predicate`` is true."""
        return self.activities.find_activities(predicate)

    def add_activity(self, start_date: str, **fields: Any) -> dict[str, Any]:
        """Add a late upload to the default athlete; ``fields`` may hold sport_type, name, id and any overrides."""
        return add_late_upload(self.activities, start_date, fields)

    def connection(self, host: str, athlete: Athlete | None = None) -> dict[str, Any]:
        """The Airflow connection of ``athlete`` (default: the default athlete)."""
        tokens = (athlete or self.athletes.default).tokens
        return {
            "host": host,
            "login": self.settings.client_id,
            "password": self.settings.client_secret,
            "extra": {"refresh_token": tokens.refresh_token},
        }

    def authorize(self, request: Request) -> tuple[Athlete, AccessGrant]:
        """The athlete behind the caller's access token and its grant, or the 401 bodies Strava sends."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            token = request.query_params.get("access_token", "")
        found = self._access_owner(token.strip())
        if found is None:
            raise strava_error(401, "Authorization Error", "Athlete", "access_token", "invalid")
        athlete, grant = found
        if not grant.scopes() & {"activity:read", "activity:read_all"}:
            raise strava_error(401, "Authorization Error", "AccessToken", "activity:read_permission", "missing")
        self.stats.count_in("requests_by_athlete", str(athlete.id))
        return athlete, grant

    def _access_owner(self, access_token: str) -> tuple[Athlete, AccessGrant] | None:
        """The athlete holding a live ``access_token`` and its grant (tokens are random: at most one)."""
        for athlete in self.athletes.all() if access_token else ():
            grant = athlete.tokens.check(access_token)
            if grant is not None:
                return athlete, grant
        return None

    def count_rate_limit(self) -> dict[str, str]:
        spent = "window" if self.faults.take("rate_limit_next") else "day" if self.faults.take(
            "daily_limit_next") else None
        if spent is not None:
            self.stats.incr("faults_injected")
        allowed, headers = self.rate_limiter.hit(self.clock(), spent=spent)
        if not allowed:
            self.stats.incr("rate_limited")
            raise ApiError(
                429,
                {
                    "message": "Rate Limit Exceeded",
                    "errors": [{"resource": "Application", "field": "rate limit", "code": "exceeded"}],
                },
                headers,
            )
        return headers

    def visible_page(self, athlete: Athlete, params: ListParams, grant: AccessGrant) -> list[dict[str, Any]]:
        per_page = min(params.per_page, self.settings.max_per_page)
        items = athlete.activities.page(params.after, params.before, params.page, per_page)
        if items and self.faults.take("empty_page_next"):
            self.stats.incr("faults_injected")
            return []
        self._change_during_listing(athlete.activities, items, params)
        # Strava slices first and filters afterwards, hence short pages mid-listing.
        if "activity:read_all" not in grant.scopes():
            items = [a for a in items if a.get("visibility") != "only_me"]
        every = self.short_page_every
        if every > 0 and params.page % every == 0 and len(items) > 1:
            items = items[: max(1, len(items) - 2)]
        return items

    def _change_during_listing(self, store: ActivityStore, served: list[dict[str, Any]], params: ListParams) -> None:
        """The listing faults that are real changes, made once ``served`` is answered: the athlete deletes
        its first activity (every later one moves one place back, across page boundaries), or uploads one
        that starts between ``after`` and it (every later one moves one place on)."""
        if not served:
            return
        first = served[0]
        if self.faults.take("listing_delete_next"):
            self.stats.incr("faults_injected")
            store.delete(int(first["id"]))
        elif self.faults.as_dict()["listing_insert_next"] > 0:
            first_start = int(parse_iso_utc(first["start_date"]))
            start = first_start - 1 if params.after is None else (params.after + first_start) // 2
            # armed until a page leaves room before it for an upload
            if (params.after is None or start > params.after) and self.faults.take("listing_insert_next"):
                self.stats.incr("faults_injected")
                store.add(start, name="Uploaded during the listing")


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class ListParams:
    after: int | None
    before: int | None
    page: int
    per_page: int


def parse_list_params(query: dict[str, str]) -> ListParams:
    """Validate before/after/page/per_page the way Strava does (400 on bad values)."""
    after = _epoch_param(query, "after")
    before = _epoch_param(query, "before")
    page = _int_param(query, "page") or 1
    per_page = _int_param(query, "per_page") or DEFAULT_PER_PAGE
    return ListParams(after, before, max(page, 1), min(max(per_page, 1), MAX_PER_PAGE))


def _int_param(query: dict[str, str], name: str) -> int | None:
    raw = query.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request("Application", name) from None


def _epoch_param(query: dict[str, str], name: str) -> int | None:
    value = _int_param(query, name)
    if value is not None and value > MAX_EPOCH_SECONDS:
        raise bad_request("Application", name)  # milliseconds, not seconds
    return value


def _strava(request: Request) -> StravaState:
    state: StravaState = request.app.state.emulator.strava
    return state


async def read_form(request: Request) -> dict[str, str]:
    return await read_params(request, lambda: bad_request("Application", "body"))


router = APIRouter()


@router.post("/oauth/token")
@router.post("/api/v3/oauth/token")
async def token(request: Request) -> Response:
    strava = _strava(request)
    strava.stats.incr("token_requests")
    status = strava.faults.take_token_fail()
    if status is not None:
        strava.stats.incr("faults_injected")
        raise ApiError(status, {"message": status_phrase(status), "errors": []})
    form = await read_form(request)
    granted = strava.token_owner(form).tokens.grant(form)
    if strava.faults.take("token_rotate_fail_next"):  # granted (and rotated), but the answer is lost
        strava.stats.incr("faults_injected")
        status = strava.faults.token_fail_status
        raise ApiError(status, {"message": status_phrase(status), "errors": []})
    return json_response(granted)


@router.get("/oauth/authorize")
async def authorize(request: Request) -> Response:
    """The consent page, answered at once: 302 to ``redirect_uri`` with ``state``, ``code`` and the
    granted ``scope`` (requested ∩ ``tokens.scope``, i.e. what the athlete leaves ticked), or with
    ``error=access_denied`` when ``consent_denied``. The code is that of ``consent_athlete`` (who is logged
    in on Strava). A bad client_id, redirect_uri, response_type or scope gets Strava's 400 body and no
    redirect (RFC 6749 §4.1.2.1: never redirect for a bad client)."""
    strava = _strava(request)
    query = dict(request.query_params)
    if query.get("client_id") != strava.settings.client_id:
        raise bad_request("Application", "client_id")
    redirect_uri = query.get("redirect_uri", "")
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise bad_request("Application", "redirect_uri")
    if query.get("response_type") != "code":
        raise bad_request("Application", "response_type")
    requested = [s.strip() for s in (query.get("scope") or "read").split(",") if s.strip()]
    if not set(requested) <= KNOWN_SCOPES:
        raise bad_request("Application", "scope")
    params = {"state": query.get("state", "")}
    if strava.consent_denied:
        params["error"] = "access_denied"
    else:
        tokens = strava.consent_athlete.tokens
        offered = {s.strip() for s in tokens.scope.split(",")}
        granted = ",".join(s for s in requested if s in offered)
        params.update(code=tokens.consent(granted), scope=granted)
    separator = "&" if parts.query else "?"
    return RedirectResponse(f"{redirect_uri}{separator}{urlencode(params)}", status_code=302)


@router.get("/api/v3/athlete/activities")
async def list_activities(request: Request) -> Response:
    strava = _strava(request)
    await apply_data_faults(strava.faults, strava.stats)
    athlete, grant = strava.authorize(request)
    headers = strava.count_rate_limit()
    try:
        params = parse_list_params(dict(request.query_params))
    except ApiError as error:
        error.headers.update(headers)
        raise
    page = strava.visible_page(athlete, params, grant)
    return data_response(strava.faults, strava.stats, json_bytes(page), headers)


@router.get("/api/v3/activities/{activity_id}")
async def get_activity_detail(activity_id: int, request: Request) -> Response:
    """``GET /activities/{id}``: the authorized athlete's activity as a DetailedActivity (the summary plus
    ``description``, ``calories``, ``gear`` and ``laps``: :func:`strava_data.detailed_activity`);
    404 ``Record Not Found`` for another athlete's, a deleted one, or a
    private one without ``activity:read_all``. Counted against the application's limits like a listing."""
    strava = _strava(request)
    await apply_data_faults(strava.faults, strava.stats)
    athlete, grant = strava.authorize(request)
    headers = strava.count_rate_limit()
    activity = athlete.activities.get(activity_id)
    if activity is None or (activity.get("visibility") == "only_me" and "activity:read_all" not in grant.scopes()):
        raise ApiError(404, {"message": "Record Not Found", "errors": [
            {"resource": "Activity", "field": "id", "code": "not found"}]}, headers)
    detail = detailed_activity(activity, athlete_id=athlete.id)
    return data_response(strava.faults, strava.stats, json_bytes(detail), headers)


@router.post("/api/v3/push_subscriptions")
async def create_push_subscription(request: Request) -> Response:
    """Create the application's one push subscription (form: ``client_id``, ``client_secret``, ``callback_url``,
    ``verify_token``): the callback is validated first (Strava's GET handshake, 200 with the challenge within
    2 s), else 400; a second subscription 400 ``already exists``; wrong client credentials 401. 201 ``{"id"}``."""
    strava = _strava(request)
    try:
        subscription = await strava.push.create(await read_form(request))
    except PushError as error:
        raise ApiError(error.status, error.body) from None
    return json_response({"id": subscription.id}, status=201)


@router.get("/api/v3/push_subscriptions")
async def list_push_subscriptions(request: Request) -> Response:
    """``?client_id=&client_secret=`` → ``[{"id", "resource_state", "application_id", "callback_url",
    "created_at", "updated_at"}]`` (at most one)."""
    push = _strava(request).push
    try:
        push.check_client(await read_form(request))
    except PushError as error:
        raise ApiError(error.status, error.body) from None
    subscription = push.subscription
    return json_response([subscription.view()] if subscription else [])


@router.delete("/api/v3/push_subscriptions/{subscription_id}")
async def delete_push_subscription(subscription_id: int, request: Request) -> Response:
    """``?client_id=&client_secret=`` → 204; 404 for another id; 401 for wrong client credentials."""
    try:
        _strava(request).push.delete(subscription_id, await read_form(request))
    except PushError as error:
        raise ApiError(error.status, error.body) from None
    return Response(status_code=204)


# --------------------------------------------------------------------------- control


control_router = APIRouter()


def _athlete(request: Request) -> Athlete:
    """The athlete a control request names with ``?athlete_id=`` (default: the default athlete); 400/404."""
    return _strava(request).athletes.from_query(request)


def _not_found(activity_id: int) -> ApiError:
    return ApiError(404, {"message": "Record Not Found", "id": activity_id})


@control_router.post("/athletes")
async def create_athlete(request: Request) -> Response:
    """Another athlete authorizes the application: ``{"athlete_id": int, "years"?: int, "activities"?: int}``
    → 201 ``{"athlete_id", "refresh_token", "authorization_code"}``; 409 if the athlete exists."""
    strava = _strava(request)
    body = await read_json_object(request)
    if "athlete_id" not in body or set(body) - {"athlete_id", "years", "activities"}:
        raise ApiError(400, {"message": 'expected {"athlete_id": int, "years"?: int, "activities"?: int}'})
    athlete_id = strava.athletes.parse(body["athlete_id"])
    years = optional_int(body, "years", MAX_YEARS)
    activities = optional_int(body, "activities", MAX_ACTIVITIES)
    athlete = strava.add_athlete(athlete_id, years=years, activities=activities)
    return json_response(
        {
            "athlete_id": athlete.id,
            "refresh_token": athlete.tokens.refresh_token,
            "authorization_code": athlete.tokens.authorization_code,
        },
        status=201,
    )


@control_router.get("/athletes")
async def list_athletes(request: Request) -> Response:
    """``{"athletes": [{"athlete_id", "activities" (listed now), "revoked"}, ...]}``, the default athlete first."""
    return json_response({"athletes": [a.summary() for a in _strava(request).athletes.all()]})


@control_router.post("/activities")
async def add_activity(request: Request) -> Response:
    """Late upload: ``{"start_date": ISO (UTC), "sport_type"?, "name"?, "id"?, ...overrides}``."""
    athlete = _athlete(request)
    body = await read_json_object(request)
    if "start_date" not in body:
        raise ApiError(400, {"message": "start_date is required"})
    try:
        created = add_late_upload(athlete.activities, str(body.pop("start_date")), body)
    except (TypeError, ValueError) as error:
        raise ApiError(400, {"message": str(error)}) from None
    _strava(request).push.emit("activity", int(created["id"]), "create", athlete.id)
    return json_response(created, status=201)


@control_router.get("/activities/{activity_id}")
async def get_activity(activity_id: int, request: Request) -> Response:
    activity = _athlete(request).activities.get(activity_id)
    if activity is None:
        raise _not_found(activity_id)
    return json_response(activity)


@control_router.put("/activities/{activity_id}")
async def update_activity(activity_id: int, request: Request) -> Response:
    athlete = _athlete(request)
    changes = await read_json_object(request)
    changes.pop("id", None)
    before = athlete.activities.get(activity_id)
    try:
        updated = athlete.activities.update(activity_id, changes)
    except ValueError as error:
        raise ApiError(400, {"message": str(error)}) from None
    if updated is None or before is None:
        raise _not_found(activity_id)
    updates = event_updates(before, updated)
    if updates:  # Strava sends an update event for a new title, type or privacy only
        _strava(request).push.emit("activity", activity_id, "update", athlete.id, updates)
    return json_response(updated)


def event_updates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, str]:
    """What an update event says changed, as Strava sends it: ``title`` (the name), ``type`` (the sport type)
    and ``private`` (``"true"``/``"false"``), only those that changed."""
    updates: dict[str, str] = {}
    if before.get("name") != after.get("name"):
        updates["title"] = str(after.get("name"))
    if before.get("sport_type") != after.get("sport_type"):
        updates["type"] = str(after.get("sport_type"))
    elif before.get("type") != after.get("type"):
        updates["type"] = str(after.get("type"))
    if bool(before.get("private")) != bool(after.get("private")):
        updates["private"] = "true" if after.get("private") else "false"
    return updates


@control_router.delete("/activities/{activity_id}")
async def delete_activity(activity_id: int, request: Request) -> Response:
    athlete = _athlete(request)
    if not athlete.activities.delete(activity_id):
        raise _not_found(activity_id)
    _strava(request).push.emit("activity", activity_id, "delete", athlete.id)
    return Response(status_code=204)


@control_router.post("/revoke")
async def revoke(request: Request) -> Response:
    """The athlete deauthorizes the application; the other athletes keep working. With a push subscription,
    Strava's event ``athlete``/``update`` ``{"authorized": "false"}`` is delivered."""
    athlete = _athlete(request)
    athlete.tokens.revoke()
    _strava(request).push.emit("athlete", athlete.id, "update", athlete.id, {"authorized": "false"})
    return json_response({"revoked": True})


@control_router.post("/consent")
async def set_consent(request: Request) -> Response:
    """What happens on the consent page: ``{"athlete_id"?: int, "scope"?: "read,activity:read", "deny"?: true}``;
    ``athlete_id`` is who is logged in on Strava (default: the default athlete), ``scope`` what they leave
    ticked (kept per athlete)."""
    strava = _strava(request)
    body = await read_json_object(request)
    athlete = strava.athletes.require(body.get("athlete_id"))
    scope, deny = body.get("scope", athlete.tokens.scope), body.get("deny", strava.consent_denied)
    if not isinstance(scope, str) or not isinstance(deny, bool) or set(body) - {"scope", "deny", "athlete_id"}:
        raise ApiError(400, {"message": "expected {\"athlete_id\"?: int, \"scope\"?: string, \"deny\"?: boolean}"})
    athlete.tokens.scope, strava.consent_denied, strava.consent_athlete = scope, deny, athlete
    return json_response({"scope": scope, "deny": deny, "athlete_id": athlete.id})


@control_router.delete("/rate-limits")
async def reset_rate_limits(request: Request) -> Response:
    _strava(request).rate_limiter.reset()
    return Response(status_code=204)


@control_router.get("/connection")
async def connection(request: Request) -> Response:
    """The Airflow connection; ``?athlete_id=`` gives that athlete's current refresh token."""
    athlete = _athlete(request)
    return json_response(_strava(request).connection(str(request.base_url).rstrip("/"), athlete))


@control_router.get("/push")
async def get_push(request: Request) -> Response:
    """The delivery settings, ``subscription`` (or null), ``pending`` (deliveries not finished), ``totals``
    (``events``, ``posts``, ``delivered``, ``failed``, ``duplicated``, ``lost``, never trimmed) and ``log`` (the
    last 100,000 events: ``seq``, ``event``, ``callback_url``, ``attempts``, ``statuses`` (an HTTP status,
    ``"timeout"`` or the transport error's name per POST), ``sent_at`` (epoch s per POST), ``delivered`` (the
    first delivery got a 200), ``duplicated`` (delivered a second time: its POSTs are counted in the same entry),
    ``lost`` (never sent), ``done``). Query: ``wait=S`` waits up to S seconds for the pending deliveries to
    finish first; ``log=0`` leaves the log out; ``since=SEQ`` gives only the entries after SEQ."""
    push = _strava(request).push
    query = request.query_params
    try:
        wait = float(query.get("wait") or 0)
        since = int(query.get("since") or 0)
    except ValueError:
        raise ApiError(400, {"message": "wait must be a number of seconds, since an integer"}) from None
    if wait > 0:
        await push.wait_idle(min(wait, 600.0))
    return json_response(push.view(log=query.get("log", "1") not in ("0", "false"), since=since))


@control_router.put("/push")
async def set_push(request: Request) -> Response:
    """Delivery faults, any of ``{"delay_seconds": float, "duplicate_rate": 0..1, "lost_rate": 0..1, "seed": int,
    "retry_pause_seconds": float, "timeout_seconds": float}``; answers like GET without the log."""
    push = _strava(request).push
    try:
        push.update_faults(await read_json_object(request))
    except ValueError as error:
        raise ApiError(400, {"message": str(error)}) from None
    return json_response(push.view(log=False))


@control_router.delete("/push")
async def reset_push(request: Request) -> Response:
    """Well-behaved deliveries again, the log and totals emptied; the subscription stays (the API deletes it)."""
    _strava(request).push.reset()
    return Response(status_code=204)

"""Primitives shared by every emulated API: errors, JSON, stats and fault switches.

Kept apart from ``app.py`` so service modules (``strava.py``, later ``google.py``)
can import them without an import cycle through the app factory.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from http import HTTPStatus
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl

from fastapi import Request, Response

JSON_MEDIA_TYPE = "application/json; charset=utf-8"


class ApiError(Exception):
    """Raised by route code; the app turns it into a JSON response as-is."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def json_bytes(payload: Any) -> bytes:
    # ensure_ascii=False: real APIs send UTF-8, clients must decode it properly.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_bytes(payload), status_code=status, headers=headers, media_type=JSON_MEDIA_TYPE)


def status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Stats:
    """Thread-safe request counters (by route template), named counters and named groups of counters
    (e.g. requests by athlete)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._counters: Counter[str] = Counter()
        self._declared: set[str] = set()
        self._groups: dict[str, Counter[str]] = {}

    def declare(self, *names: str) -> None:
        """Make counters show up as 0 in snapshots before their first increment."""
        with self._lock:
            self._declared.update(names)

    def declare_group(self, *names: str) -> None:
        """Make groups show up (as ``{}``) in snapshots before their first count."""
        with self._lock:
            for name in names:
                self._groups.setdefault(name, Counter())

    def count_in(self, group: str, key: str) -> None:
        with self._lock:
            self._groups.setdefault(group, Counter())[key] += 1

    def count_request(self, key: str) -> None:
        with self._lock:
            self._requests[key] += 1

    def incr(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            names = sorted(self._declared | set(self._counters))
            groups = {name: dict(counts) for name, counts in sorted(self._groups.items())}
            return {"requests": dict(self._requests), **{n: self._counters[n] for n in names}, **groups}

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._counters.clear()
            for counts in self._groups.values():
                counts.clear()


@dataclass
class Faults:
    """One-shot fault switches; each ``*_next`` counts down per affected request."""

    fail_next: int = 0
    fail_status: int = 503
    slow_next: int = 0
    slow_seconds: float = 0.0
    malformed_next: int = 0
    #: the next data answers: 200 with an HTML page (a captive portal, a proxy's error page)
    html_next: int = 0
    #: the next data answers: the right JSON under ``Content-Type: text/plain``
    wrong_type_next: int = 0
    #: the next data answers: cut off mid-body, the connection closed (a reset after the headers)
    cut_next: int = 0
    token_fail_next: int = 0
    token_fail_status: int = 500
    #: the next token requests are granted (a rotated refresh token replaces the old one at once, as on
    #: Strava), and then answered with ``token_fail_status``: the client never sees the new refresh token
    token_rotate_fail_next: int = 0
    #: the next data requests find the rate limit reached: Strava's 15-minute window filled (429 with its
    #: usage headers, as if another client of the application had spent it), Google's 429 with a
    #: ``Retry-After: retry_after_seconds`` header (as a front end may send)
    rate_limit_next: int = 0
    retry_after_seconds: int = 1
    #: Strava: the next data request finds the day's read limit spent (429 until UTC midnight)
    daily_limit_next: int = 0
    #: listing anomalies, each applied after (or, for ``empty_page_next``, instead of) a listing page:
    #: the athlete deletes the first item of the page just served (later items move one page back),
    #: uploads an item that sorts before the page just served (items move one page on), or the server
    #: answers one page empty although more data follows (Strava filters pages after slicing them)
    listing_delete_next: int = 0
    listing_insert_next: int = 0
    empty_page_next: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update; raises ValueError on unknown keys or bad values."""
        known = {f.name: f.type for f in fields(self)}
        unknown = set(changes) - set(known)
        if unknown:
            raise ValueError(f"unknown fault switches: {sorted(unknown)}")
        checked = {name: _checked_fault_value(name, value) for name, value in changes.items()}
        with self._lock:
            for name, value in checked.items():
                setattr(self, name, value)

    def clear(self) -> None:
        with self._lock:
            for f in fields(self):
                setattr(self, f.name, f.default)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self)}

    def take(self, counter: str) -> bool:
        """Count down the one-shot switch ``counter`` (a field ending in ``_next``); True if it was armed."""
        with self._lock:
            left = getattr(self, counter)
            if left <= 0:
                return False
            setattr(self, counter, left - 1)
            return True

    def take_fail(self) -> int | None:
        return self.fail_status if self.take("fail_next") else None

    def take_slow(self) -> float:
        return self.slow_seconds if self.take("slow_next") else 0.0

    def take_malformed(self) -> bool:
        return self.take("malformed_next")

    def take_token_fail(self) -> int | None:
        return self.token_fail_status if self.take("token_fail_next") else None


def _checked_fault_value(name: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if name.endswith("_status"):
        if not isinstance(value, int) or not 400 <= value <= 599:
            raise ValueError(f"{name} must be an HTTP error status (400-599)")
        return value
    if value < 0:
        raise ValueError(f"{name} must be >= 0")
    return float(value) if name == "slow_seconds" else int(value)


def fault_error(status: int) -> ApiError:
    return ApiError(status, {"message": status_phrase(status), "errors": []})


async def apply_data_faults(faults: Faults, stats: Stats) -> None:
    """Injected failure (raises) and/or delay, applied before a data request is served."""
    status = faults.take_fail()
    if status is not None:
        stats.incr("faults_injected")
        raise fault_error(status)
    delay = faults.take_slow()
    if delay > 0:
        stats.incr("faults_injected")
        # asyncio.sleep, not time.sleep: other requests keep being served meanwhile.
        await asyncio.sleep(delay)


def truncate_json(body: bytes) -> bytes:
    """A body that is cut off mid-document, as a dropped connection would leave it."""
    return body[: max(1, len(body) // 2)]


HTML_PAGE = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def data_response(faults: Faults, stats: Stats, body: bytes, headers: dict[str, str] | None = None) -> Response:
    """A data answer (JSON ``body``), with the body faults armed in ``faults`` applied: truncated JSON, an HTML
    page with status 200, the JSON under a wrong content type, or the connection closed mid-body."""
    media_type = "application/json; charset=utf-8"
    headers = dict(headers or {})
    if faults.take_malformed():
        body = truncate_json(body)
    elif faults.take("html_next"):
        body, media_type = HTML_PAGE, "text/html"
    elif faults.take("wrong_type_next"):
        media_type = "text/plain"
    elif faults.take("cut_next"):
        # the declared length is longer than what is sent: the server closes the connection mid-body
        headers["content-length"] = str(len(body) * 2)
    else:
        return Response(body, headers=headers, media_type=media_type)
    stats.incr("faults_injected")
    return Response(body, headers=headers, media_type=media_type)


async def read_params(request: Request, bad_json: Callable[[], Exception]) -> dict[str, str]:
    """OAuth token parameters from the query string and a form or JSON body (clients use all three).

    ``bad_json`` makes the provider-shaped error for a body that is not JSON.
    """
    values = dict(request.query_params)
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if "json" in content_type:
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            raise bad_json() from None
        if isinstance(parsed, dict):
            values.update({k: str(v) for k, v in parsed.items()})
    elif "multipart" in content_type:
        form = await request.form()
        values.update({k: str(v) for k, v in form.items()})
    else:
        values.update(dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)))
    return values


class ServiceState:
    """What every emulated service's state holds: its settings and the emulator's shared parts."""

    def __init__(self, settings: Any, *, seed: int, clock: Callable[[], float], stats: Stats,
                 faults: Faults) -> None:
        self.settings = settings
        self.seed = seed
        self.clock = clock
        self.stats = stats
        self.faults = faults
        self.consent_denied = False  # the user presses "Cancel" on the consent page


def optional_int(body: dict[str, Any], name: str, maximum: int) -> int | None:
    """``body[name]`` if present: an integer in 0..maximum (400 otherwise); None if absent or null."""
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum):
        raise ApiError(400, {"message": f"{name} must be an integer in 0..{maximum}"})
    return value


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object (control endpoints); 400 otherwise."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ApiError(400, {"message": "body must be a JSON object"}) from None
    if not isinstance(body, dict):
        raise ApiError(400, {"message": "body must be a JSON object"})
    return body


AccountId = TypeVar("AccountId", int, str)
Account = TypeVar("Account")


class Accounts(Generic[AccountId, Account]):
    """The people (Strava athletes, Google users) who authorized the one application, by id.

    Tokens, codes and data belong to one account each, while rate limits, quotas and faults stay
    app-wide, as on the real APIs.  The default account always exists and comes first.  Control
    endpoints name an account with ``<kind>_id`` (query parameter or body field); without it they
    act on the default account, so single-account clients keep working unchanged.
    """

    def __init__(self, default_id: AccountId, default: Account, *, kind: str,
                 parse: Callable[[object], AccountId]) -> None:
        self.default_id = default_id
        self.default = default
        self.kind = kind
        self._parse = parse  # raises ValueError/TypeError on a bad id
        self._lock = threading.Lock()
        self._by_id: dict[AccountId, Account] = {default_id: default}

    @property
    def param(self) -> str:
        return f"{self.kind}_id"

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, account_id: AccountId) -> Account | None:
        with self._lock:
            return self._by_id.get(account_id)

    def all(self) -> list[Account]:
        """A snapshot, default first, then in creation order."""
        with self._lock:
            return list(self._by_id.values())

    def find(self, predicate: Callable[[Account], bool]) -> Account | None:
        return next((account for account in self.all() if predicate(account)), None)

    def create(self, account_id: AccountId, make: Callable[[], Account]) -> Account:
        """Build and register a new account; 409 if the id is taken (``make`` is then not called)."""
        with self._lock:
            if account_id in self._by_id:
                raise ApiError(409, {"message": f"{self.kind} {account_id} already exists", self.param: account_id})
            account = self._by_id[account_id] = make()
            return account

    def parse(self, raw: object) -> AccountId:
        """A valid id from a query or body value; 400 otherwise."""
        try:
            return self._parse(raw)
        except (TypeError, ValueError) as error:
            raise ApiError(400, {"message": f"bad {self.param} {raw!r}: {error}"}) from None

    def require(self, raw: object = None) -> Account:
        """The account named by ``raw`` (None: the default one); 400 if malformed, 404 if unknown."""
        if raw is None:
            return self.default
        account_id = self.parse(raw)
        account = self.get(account_id)
        if account is None:
            raise ApiError(404, {"message": f"no {self.kind} {account_id}", self.param: account_id})
        return account

    def from_query(self, request: Request) -> Account:
        """The account a control request names with ``?<kind>_id=``; the default one without it."""
        return self.require(request.query_params.get(self.param))

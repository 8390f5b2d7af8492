"""The Google side of the emulator (Google OAuth + Health API v4), exercised over real HTTP."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests

from fitness_emulator import EmulatorSettings, GoogleSettings, RunningEmulator, start_emulator
from fitness_emulator.__main__ import build_parser, settings_from_args
from fitness_emulator.google import METRICS_SCOPE, NUTRITION_SCOPE
from fitness_emulator.google_data import HealthStore

DATA_POINTS = "/v4/users/me/dataTypes/{}/dataPoints"
ROLLUP = "/v4/users/me/dataTypes/nutrition-log/dataPoints:dailyRollUp"
INVALID_GRANT = {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
INVALID_CLIENT = {"error": "invalid_client", "error_description": "The OAuth client was not found."}
WEIGHT_SEPT = (
    'weight.sample_time.physical_time >= "2026-09-01T00:00:00Z" '
    'AND weight.sample_time.physical_time < "2026-10-01T00:00:00Z"'
)
INT64_MAX = 2**63 - 1

# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def google_emu() -> Iterator[RunningEmulator]:
    """A default emulator (seed 42) shared by read-only tests."""
    with start_emulator(EmulatorSettings(seed=42)) as running:
        yield running


@pytest.fixture(scope="module")
def token(google_emu: RunningEmulator) -> str:
    return access_token(google_emu)


@pytest.fixture(scope="module")
def everything(google_emu: RunningEmulator, token: str) -> dict[str, list[dict[str, Any]]]:
    """Every point of every data type, newest first, fetched over HTTP."""
    return {t: list_all(google_emu, token, t) for t in ("weight", "body-fat", "height", "nutrition-log")}


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., RunningEmulator]]:
    """Factory ``make_emulator(seed=42, **google_settings)``; every emulator is stopped at teardown."""
    started: list[RunningEmulator] = []

    def make(seed: int = 42, **google: Any) -> RunningEmulator:
        running = start_emulator(EmulatorSettings(seed=seed, google=GoogleSettings(**google)))
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def connection(emu: RunningEmulator) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{emu.url}/_emulator/fitbit/connection", timeout=10).json()
    return body


def refresh(emu: RunningEmulator, refresh_token: str | None, **overrides: str) -> requests.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token or "",
        "client_id": "demo-google-client-id",
        "client_secret": "demo-google-client-secret",
        **overrides,
    }
    return requests.post(f"{emu.url}/token", data=form, timeout=10)


def access_token(emu: RunningEmulator) -> str:
    """A valid access token, obtained the way a client would: connection + refresh."""
    conn = connection(emu)
    response = requests.post(
        conn["extra"]["refresh_url"],
        data={
            "grant_type": "refresh_token",
            "refresh_token": conn["extra"]["refresh_token"],
            "client_id": conn["login"],
            "client_secret": conn["password"],
        },
        timeout=10,
    )
    response.raise_for_status()
    value: str = response.json()["access_token"]
    return value


def get(emu: RunningEmulator, token: str | None, path: str, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{emu.url}{path}", params=params, headers=headers, timeout=30)


def list_page(emu: RunningEmulator, token: str, data_type: str, **params: Any) -> requests.Response:
    return get(emu, token, DATA_POINTS.format(data_type), **params)


def list_all(emu: RunningEmulator, token: str, data_type: str, **params: Any) -> list[dict[str, Any]]:
    """Follow nextPageToken until it is absent (a final page may be just {})."""
    items: list[dict[str, Any]] = []
    page_token = None
    while True:
        extra = {"pageToken": page_token} if page_token else {}
        response = list_page(emu, token, data_type, **params, **extra)
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body.get("dataPoints", []))
        page_token = body.get("nextPageToken")
        if not page_token:
            return items


def rollup(emu: RunningEmulator, token: str, start: date, end: date, **extra: Any) -> requests.Response:
    body = {
        "range": {"start": {"date": _date(start)}, "end": {"date": _date(end)}},
        "windowSizeDays": 1,
        **extra,
    }
    return requests.post(f"{emu.url}{ROLLUP}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _date(day: date) -> dict[str, int]:
    return {"year": day.year, "month": day.month, "day": day.day}


def as_date(value: dict[str, int]) -> date:
    return date(value["year"], value["month"], value["day"])


def point_id(item: dict[str, Any]) -> int:
    return int(item["name"].rsplit("/", 1)[1])


def sample(item: dict[str, Any]) -> dict[str, Any]:
    body = next(v for k, v in item.items() if k not in ("name", "dataSource"))
    return body["sampleTime"] if "sampleTime" in body else body["interval"]


def physical(item: dict[str, Any]) -> datetime:
    times = sample(item)
    text = times.get("physicalTime") or times["startTime"]
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def civil_date(item: dict[str, Any]) -> date:
    times = sample(item)
    return as_date((times.get("civilTime") or times["civilStartTime"])["date"])


def freeze_clock(emu: RunningEmulator, at: float) -> list[float]:
    """Pin the emulator's clock; mutate the returned cell to move time."""
    cell = [at]
    emu.state.clock = lambda: cell[0]
    return cell


def assert_google_error(response: requests.Response, code: int, status: str) -> dict[str, Any]:
    assert response.status_code == code, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "status", "details"}
    assert (error["code"], error["status"]) == (code, status)
    assert isinstance(error["details"], list) and error["message"]
    return error


def set_google(emu: RunningEmulator, **changes: Any) -> dict[str, Any]:
    response = requests.post(f"{emu.url}/_emulator/google/settings", json=changes, timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


# --------------------------------------------------------------------------- tokens


def test_refresh_issues_new_access_token_and_no_refresh_token(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator()
    conn = connection(emu)
    assert conn == {
        "host": emu.url,
        "login": "demo-google-client-id",
        "password": "demo-google-client-secret",
        "extra": {"refresh_token": "demo-google-refresh-token", "refresh_url": f"{emu.url}/token"},
    }
    first, second = (refresh(emu, "demo-google-refresh-token") for _ in range(2))
    assert first.status_code == second.status_code == 200
    body = first.json()
    assert set(body) == {"access_token", "expires_in", "scope", "token_type"}  # no refresh_token
    assert body["expires_in"] == 3599 and body["token_type"] == "Bearer"
    assert body["scope"].split(" ") == [METRICS_SCOPE, NUTRITION_SCOPE]
    assert second.json()["access_token"] != body["access_token"]
    for access in (body["access_token"], second.json()["access_token"]):  # older ones stay valid
        assert get(emu, access, "/v4/users/me/identity").status_code == 200
    assert connection(emu)["extra"]["refresh_token"] == "demo-google-refresh-token"
    stats = emu.stats()
    assert stats["google_token_refreshes"] == 2 and stats["google_token_requests"] == 2
    assert stats["requests"]["POST /token"] == 2


def test_rotation_when_enabled(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(rotate_refresh_tokens=True)
    body = refresh(emu, "demo-google-refresh-token").json()
    assert body["refresh_token"] not in ("", "demo-google-refresh-token")
    stale = refresh(emu, "demo-google-refresh-token")
    assert stale.status_code == 400 and stale.json() == INVALID_GRANT
    assert connection(emu)["extra"]["refresh_token"] == body["refresh_token"]
    assert refresh(emu, body["refresh_token"]).status_code == 200


def test_invalid_grant_client_and_authorization_code(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator()
    unknown = refresh(emu, "not-a-token")
    assert unknown.status_code == 400 and unknown.json() == INVALID_GRANT
    for override in ({"client_secret": "nope"}, {"client_id": "other.apps.googleusercontent.com"}):
        wrong = refresh(emu, "demo-google-refresh-token", **override)
        assert wrong.status_code == 401 and wrong.json() == INVALID_CLIENT
    code = refresh(emu, None, grant_type="authorization_code", code="demo-google-code", redirect_uri="http://x/cb")
    assert code.status_code == 200
    issued = code.json()["refresh_token"]
    assert connection(emu)["extra"]["refresh_token"] == issued
    assert refresh(emu, issued).status_code == 200
    assert refresh(emu, "demo-google-refresh-token").status_code == 200  # a new consent keeps older tokens
    bad_code = refresh(emu, None, grant_type="authorization_code", code="nope", redirect_uri="http://x/cb")
    assert bad_code.status_code == 400 and bad_code.json()["error"] == "invalid_grant"

    assert requests.post(f"{emu.url}/_emulator/google/revoke", timeout=10).json() == {"revoked": True}
    assert refresh(emu, issued).json() == INVALID_GRANT
    assert connection(emu)["extra"]["refresh_token"] is None


def test_testing_app_refresh_tokens_die_after_seven_days(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(testing_app=True)
    clock = freeze_clock(emu, time.time())
    body = refresh(emu, "demo-google-refresh-token").json()
    assert 604_700 < body["refresh_token_expires_in"] <= 604_799
    assert "refresh_token" not in body
    clock[0] += 604_800
    assert refresh(emu, "demo-google-refresh-token").json() == INVALID_GRANT
    assert connection(emu)["extra"]["refresh_token"] is None
    assert get(emu, body["access_token"], "/v4/users/me/identity").status_code == 401  # long expired too

    code = refresh(emu, None, grant_type="authorization_code", code="demo-google-code", redirect_uri="http://x/cb")
    assert code.json()["refresh_token_expires_in"] == 604_799
    # Switching testing mode off at run time: the token survives the 7 days.
    set_google(emu, testing_app=False)
    clock[0] += 604_800 + 5
    after = refresh(emu, code.json()["refresh_token"])
    assert after.status_code == 200 and "refresh_token_expires_in" not in after.json()


# --------------------------------------------------------------------------- identity and errors


def test_identity(google_emu: RunningEmulator, token: str) -> None:
    response = get(google_emu, token, "/v4/users/me/identity")
    assert response.status_code == 200
    assert response.json() == {
        "name": "users/me/identity",
        "healthUserId": "108527364915620845632",
        "legacyUserId": "B7K2QX",
    }


def test_unauthenticated(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(access_token_ttl=600)
    token = access_token(emu)
    for bad in (None, "garbage"):
        response = get(emu, bad, DATA_POINTS.format("weight"))
        assert_google_error(response, 401, "UNAUTHENTICATED")
        assert "WWW-Authenticate" in response.headers
    freeze_clock(emu, time.time() + 601)
    assert_google_error(get(emu, token, "/v4/users/me/identity"), 401, "UNAUTHENTICATED")


def test_missing_scope_is_403_naming_the_scope(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(scopes=(METRICS_SCOPE,))
    token = access_token(emu)
    assert list_page(emu, token, "weight", pageSize=1).status_code == 200
    error = assert_google_error(list_page(emu, token, "nutrition-log"), 403, "PERMISSION_DENIED")
    assert NUTRITION_SCOPE in error["message"]
    assert_google_error(rollup(emu, token, date(2026, 9, 1), date(2026, 9, 2)), 403, "PERMISSION_DENIED")

    assert set_google(emu, scopes=[NUTRITION_SCOPE])["scopes"] == [NUTRITION_SCOPE]
    newer = access_token(emu)  # scopes apply to tokens issued from now on
    assert list_page(emu, newer, "nutrition-log", pageSize=1).status_code == 200
    for data_type in ("weight", "body-fat", "height"):
        error = assert_google_error(list_page(emu, newer, data_type), 403, "PERMISSION_DENIED")
        assert METRICS_SCOPE in error["message"]
    assert list_page(emu, token, "weight", pageSize=1).status_code == 200  # old token keeps its scopes


def test_unknown_type_and_account_not_linked(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(account_linked=False)
    token = access_token(emu)
    assert_google_error(list_page(emu, token, "steps"), 404, "RESOURCE_NOT_FOUND")
    for response in (list_page(emu, token, "weight"), get(emu, token, "/v4/users/me/identity")):
        error = assert_google_error(response, 400, "FAILED_PRECONDITION")
        assert error["details"][0]["reason"] == "ACCOUNT_NOT_LINKED"
    set_google(emu, account_linked=True)
    assert list_page(emu, token, "weight", pageSize=1).status_code == 200


def test_per_minute_quota(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(requests_per_minute=5)
    clock = freeze_clock(emu, (time.time() // 60) * 60 + 1)
    token = access_token(emu)
    for _ in range(5):
        assert list_page(emu, token, "weight", pageSize=1).status_code == 200
    limited = list_page(emu, token, "weight", pageSize=1)
    assert_google_error(limited, 429, "RESOURCE_EXHAUSTED")
    assert "Retry-After" not in limited.headers
    assert_google_error(get(emu, token, "/v4/users/me/identity"), 429, "RESOURCE_EXHAUSTED")
    assert refresh(emu, "demo-google-refresh-token").status_code == 200  # token endpoint not limited
    clock[0] += 58  # same fixed window
    assert list_page(emu, token, "weight", pageSize=1).status_code == 429
    clock[0] += 2  # next window
    assert list_page(emu, token, "weight", pageSize=1).status_code == 200
    assert emu.stats()["google_rate_limited"] == 3
    set_google(emu, requests_per_minute=1000)
    assert list_page(emu, token, "weight", pageSize=1).status_code == 200


# --------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("data_type", "filter_text"),
    [
        ("weight", WEIGHT_SEPT),
        ("weight", 'weight.sample_time.physical_time >= "2026-09-01T00:00:00Z"'),
        ("weight", 'weight.sample_time.physical_time < "2026-10-01T00:00:00Z"'),
        ("body-fat", WEIGHT_SEPT.replace("weight.", "body_fat.")),
        ("height", 'height.sample_time.physical_time >= "2020-01-01T00:00:00Z"'),
        (
            "nutrition-log",
            'nutrition_log.interval.civil_start_time >= "2026-09-01" '
            'AND nutrition_log.interval.civil_start_time < "2026-10-01"',
        ),
    ],
)
def test_accepted_filters(
    google_emu: RunningEmulator,
    token: str,
    everything: dict[str, list[dict[str, Any]]],
    data_type: str,
    filter_text: str,
) -> None:
    listed = list_all(google_emu, token, data_type, filter=filter_text)
    assert listed
    if data_type == "nutrition-log":
        expected = [i for i in everything[data_type] if date(2026, 9, 1) <= civil_date(i) < date(2026, 10, 1)]
    else:
        lower = datetime(2026, 9, 1, tzinfo=UTC) if ">=" in filter_text and "2026" in filter_text else None
        upper = datetime(2026, 10, 1, tzinfo=UTC) if "<" in filter_text.replace(">=", "") else None
        expected = [
            i
            for i in everything[data_type]
            if (lower is None or physical(i) >= lower) and (upper is None or physical(i) < upper)
        ]
    assert listed == expected


@pytest.mark.parametrize(
    ("data_type", "filter_text", "hint"),
    [
        ("weight", 'weight.sampleTime.physicalTime >= "2026-09-01T00:00:00Z"', "snake_case"),
        ("weight", 'body_fat.sample_time.physical_time >= "2026-09-01T00:00:00Z"', "body-fat"),
        ("weight", 'weight.sample_time.physical_time >= "2026-09-01"', "RFC 3339"),
        ("weight", 'weight.sample_time.physical_time >= "2026-09-01T00:00:00+02:00"', "RFC 3339"),
        ("weight", 'weight.sample_time.physical_time >= "2026-13-01T00:00:00Z"', "not a valid"),
        ("weight", 'weight.sample_time.physical_time > "2026-09-01T00:00:00Z"', "'>'"),
        ("weight", 'weight.sample_time.physical_time <= "2026-09-01T00:00:00Z"', "'<='"),
        ("weight", WEIGHT_SEPT.replace(" AND ", " OR "), "OR"),
        ("weight", WEIGHT_SEPT.replace(" AND ", " and "), "AND"),
        ("weight", "weight.sample_time.physical_time >= 2026-09-01T00:00:00Z", "double-quoted"),
        ("weight", WEIGHT_SEPT.replace("< ", ">= "), "more than one"),
        ("weight", f"{WEIGHT_SEPT} AND", "ends after AND"),
        ("weight", 'weight.weight_grams >= "1"', "unsupported field"),
        ("nutrition-log", 'nutrition_log.interval.civil_start_time >= "2026-09-01T00:00:00Z"', "YYYY-MM-DD"),
        ("nutrition-log", 'nutrition_log.interval.start_time >= "2026-09-01T00:00:00Z"', "unsupported field"),
        ("nutrition-log", 'nutritionLog.interval.civilStartTime >= "2026-09-01"', "snake_case"),
        ("height", 'weight.sample_time.physical_time >= "2026-09-01T00:00:00Z"', "belongs to data type 'weight'"),
    ],
)
def test_rejected_filters(google_emu: RunningEmulator, token: str, data_type: str, filter_text: str, hint: str) -> None:
    error = assert_google_error(list_page(google_emu, token, data_type, filter=filter_text), 400, "INVALID_ARGUMENT")
    assert hint in error["message"]
    assert error["details"][0]["fieldViolations"][0]["field"] == "filter"


def test_page_tokens_are_bound_to_the_filter(google_emu: RunningEmulator, token: str) -> None:
    first = list_page(google_emu, token, "weight", filter=WEIGHT_SEPT, pageSize=3).json()
    page_token = first["nextPageToken"]
    other = WEIGHT_SEPT.replace("2026-09-01", "2026-08-01")
    assert_google_error(
        list_page(google_emu, token, "weight", filter=other, pageToken=page_token), 400, "INVALID_ARGUMENT"
    )
    assert_google_error(list_page(google_emu, token, "body-fat", pageToken=page_token), 400, "INVALID_ARGUMENT")
    assert_google_error(list_page(google_emu, token, "weight", pageToken="%%%"), 400, "INVALID_ARGUMENT")
    same = list_page(google_emu, token, "weight", filter=WEIGHT_SEPT, pageSize=3, pageToken=page_token).json()
    assert {p["name"] for p in same["dataPoints"]}.isdisjoint(p["name"] for p in first["dataPoints"])
    for bad in ("abc", "-1"):
        assert_google_error(list_page(google_emu, token, "weight", pageSize=bad), 400, "INVALID_ARGUMENT")


# --------------------------------------------------------------------------- paging and data


def test_paging_covers_every_point_once_newest_first(
    google_emu: RunningEmulator, token: str, everything: dict[str, list[dict[str, Any]]]
) -> None:
    store = google_emu.state.google.store
    now = datetime.now(UTC)
    for data_type, items in everything.items():
        names = [i["name"] for i in items]
        assert len(names) == len(set(names)), data_type
        assert {point_id(i) for i in items} == {p.id for p in store.iter_listed(data_type)}
        times = [physical(i) for i in items]
        assert times == sorted(times, reverse=True) and max(times) <= now
        assert all(
            i["name"].startswith(f"users/108527364915620845632/dataTypes/{data_type}/dataPoints/") for i in items
        )
    # Small pages give the same sequence as the default page size.
    assert list_all(google_emu, token, "weight", pageSize=37) == everything["weight"]
    # An exactly full last page still carries a token; the next page is just {}.
    total = len(everything["weight"])
    full = list_page(google_emu, token, "weight", pageSize=total).json()
    assert len(full["dataPoints"]) == total
    assert list_page(google_emu, token, "weight", pageSize=total, pageToken=full["nextPageToken"]).json() == {}
    # Default page size 1440; above 10000 is clamped, not rejected.
    default = list_page(google_emu, token, "nutrition-log").json()
    assert len(default["dataPoints"]) == 1440 and "nextPageToken" in default
    clamped = list_page(google_emu, token, "nutrition-log", pageSize=50_000).json()
    assert clamped["dataPoints"] == everything["nutrition-log"][:10_000] and "nextPageToken" not in clamped
    # Nothing matches: {}.
    empty = 'weight.sample_time.physical_time < "2001-01-01T00:00:00Z"'
    assert list_page(google_emu, token, "weight", filter=empty).json() == {}


def test_data_shapes_and_traps(everything: dict[str, list[dict[str, Any]]]) -> None:
    weights, fats, heights, meals = (everything[t] for t in ("weight", "body-fat", "height", "nutrition-log"))
    assert 3 * 52 * 3 < len(weights) < 6 * 52 * 3  # several a week for 3 years
    assert len(heights) == 2 and all(isinstance(h["height"]["heightMillimeters"], str) for h in heights)
    assert int(heights[0]["height"]["heightMillimeters"]) != int(heights[1]["height"]["heightMillimeters"])

    ids = [point_id(i) for items in everything.values() for i in items]
    assert sum(i > INT64_MAX for i in ids) > 100 and all(0 < i < 2**64 for i in ids)
    assert any(point_id(i) > INT64_MAX for i in weights)

    for item in weights:
        assert isinstance(item["weight"]["weightGrams"], int)
        st = item["weight"]["sampleTime"]
        assert st["physicalTime"].endswith("Z") and st["utcOffset"].endswith("s")
        offset = timedelta(seconds=int(st["utcOffset"][:-1]))
        local = physical(item) + offset
        assert local.date() == as_date(st["civilTime"]["date"])
        clock = st["civilTime"]["time"]
        assert (clock.get("hours", 0), clock.get("minutes", 0), clock.get("seconds", 0)) == (
            local.hour,
            local.minute,
            local.second,
        )
    methods = {(i["dataSource"]["recordingMethod"], i["dataSource"]["platform"]) for i in weights}
    assert {("PASSIVELY_MEASURED", "FITBIT"), ("ACTIVELY_MEASURED", "FITBIT"), ("MANUAL", "HEALTH_CONNECT")} <= methods
    assert all(set(i["dataSource"]) == {"recordingMethod", "platform", "device", "application"} for i in weights)

    # Body fat at the very same instant as some weights; other weights have none.
    weight_times = {i["weight"]["sampleTime"]["physicalTime"] for i in weights}
    fat_times = {i["bodyFat"]["sampleTime"]["physicalTime"] for i in fats}
    assert fat_times <= weight_times and 0 < len(fat_times) < len(weight_times)
    assert all(0 < i["bodyFat"]["percentage"] < 100 for i in fats)

    # Civil date vs UTC date: LA evenings are the next UTC day, Tokyo mornings the previous one.
    offsets = {i["weight"]["sampleTime"]["utcOffset"] for i in weights}
    assert {"-25200s", "-28800s", "32400s"} <= offsets
    assert any(physical(i).date() > civil_date(i) for i in weights)
    assert any(physical(i).date() < civil_date(i) for i in weights)
    assert any(physical(i).date() != civil_date(i) for i in meals)

    meal_types = {i["nutritionLog"]["mealType"] for i in meals}
    assert meal_types == {"BREAKFAST", "LUNCH", "DINNER", "SNACK"}
    log = meals[0]["nutritionLog"]
    assert set(log) == {"interval", "energy", "mealType", "foodDisplayName"}
    assert set(log["interval"]) == {
        "startTime",
        "endTime",
        "civilStartTime",
        "civilEndTime",
        "startUtcOffset",
        "endUtcOffset",
    }
    assert isinstance(log["energy"]["kcal"], float)
    assert any(not i["nutritionLog"]["foodDisplayName"].isascii() for i in meals)


def test_daily_rollup(google_emu: RunningEmulator, token: str, everything: dict[str, list[dict[str, Any]]]) -> None:
    sums: dict[date, float] = defaultdict(float)
    for item in everything["nutrition-log"]:
        sums[civil_date(item)] += item["nutritionLog"]["energy"]["kcal"]
    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=400), today - timedelta(days=310)  # exactly 90 days
    response = rollup(google_emu, token, start, end)
    assert response.status_code == 200
    points = response.json()["rollupDataPoints"]
    days = [as_date(p["civilStartTime"]["date"]) for p in points]
    assert days == sorted(days, reverse=True)  # newest first
    expected = {d: round(v, 1) for d, v in sums.items() if start <= d < end}
    assert {d: p["nutritionLog"]["energy"]["kcalSum"] for d, p in zip(days, points, strict=True)} == expected
    assert len(days) < 90  # days without logs are omitted, not zero
    assert all(p["nutritionLog"]["energy"]["kcalSum"] > 0 for p in points)
    assert all(as_date(p["civilEndTime"]["date"]) == d + timedelta(days=1) for d, p in zip(days, points, strict=True))

    # Closed-open: a one-day range holds that day only; the end day is excluded.
    logged = max(d for d in sums if d < end - timedelta(days=1) and d + timedelta(days=1) in sums)
    one = rollup(google_emu, token, logged, logged + timedelta(days=1)).json()["rollupDataPoints"]
    assert [as_date(p["civilStartTime"]["date"]) for p in one] == [logged]
    silent = min(d for d in expected.keys() ^ {start + timedelta(days=i) for i in range(90)})
    assert rollup(google_emu, token, silent, silent + timedelta(days=1)).json() == {}

    too_long = rollup(google_emu, token, start, end + timedelta(days=1))
    error = assert_google_error(too_long, 400, "INVALID_ARGUMENT")
    assert {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "INVALID_ROLLUP_QUERY_DURATION",
        "domain": "health.googleapis.com",
    }.items() <= error["details"][0].items()
    assert_google_error(rollup(google_emu, token, end, start), 400, "INVALID_ARGUMENT")
    broken = requests.post(
        f"{google_emu.url}{ROLLUP}", json={"range": {}}, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert_google_error(broken, 400, "INVALID_ARGUMENT")
    weight_rollup = requests.post(
        f"{google_emu.url}{DATA_POINTS.format('weight')}:dailyRollUp",
        json={},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert_google_error(weight_rollup, 400, "INVALID_ARGUMENT")


# --------------------------------------------------------------------------- faults, controls, stats


def test_fault_switches_on_google_endpoints(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator()
    faults = f"{emu.url}/_emulator/faults"
    token = access_token(emu)

    requests.post(faults, json={"fail_next": 2, "fail_status": 503}, timeout=10).raise_for_status()
    responses = [list_page(emu, token, "weight", pageSize=1), rollup(emu, token, date(2026, 9, 1), date(2026, 9, 2))]
    for response in responses:
        assert_google_error(response, 503, "UNAVAILABLE")
    assert list_page(emu, token, "weight", pageSize=1).status_code == 200

    requests.post(faults, json={"slow_next": 1, "slow_seconds": 0.6}, timeout=10).raise_for_status()
    started = time.monotonic()
    assert get(emu, token, "/v4/users/me/identity").status_code == 200
    assert time.monotonic() - started >= 0.6

    requests.post(faults, json={"malformed_next": 1}, timeout=10).raise_for_status()
    broken = list_page(emu, token, "nutrition-log", pageSize=5)
    assert broken.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.text)
    assert len(list_page(emu, token, "nutrition-log", pageSize=5).json()["dataPoints"]) == 5

    requests.post(faults, json={"token_fail_next": 1, "token_fail_status": 500}, timeout=10).raise_for_status()
    failed = refresh(emu, "demo-google-refresh-token")
    assert failed.status_code == 500 and failed.json()["error"] == "server_error"
    assert refresh(emu, "demo-google-refresh-token").status_code == 200
    assert emu.stats()["faults_injected"] == 5


def test_add_and_delete_points(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator()
    token = access_token(emu)
    control = f"{emu.url}/_emulator/google"
    moment = (datetime.now(UTC) - timedelta(seconds=5)).replace(microsecond=0)
    created = requests.post(
        f"{control}/weight",
        json={
            "physicalTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "utcOffset": 32400,
            "grams": 90200,
            "bodyFatPercentage": 21.4,
        },
        timeout=10,
    )
    assert created.status_code == 201
    body = created.json()
    assert body["weight"]["weight"]["weightGrams"] == 90200
    assert body["weight"]["weight"]["sampleTime"] == body["bodyFat"]["bodyFat"]["sampleTime"]
    assert body["weight"]["weight"]["sampleTime"]["utcOffset"] == "32400s"
    assert list_page(emu, token, "weight", pageSize=1).json()["dataPoints"][0] == body["weight"]
    assert list_page(emu, token, "body-fat", pageSize=1).json()["dataPoints"][0] == body["bodyFat"]

    weights = list_all(emu, token, "weight")
    old = weights[len(weights) // 2]
    for name in (body["weight"]["name"], old["name"]):
        path = f"{control}/dataPoints/weight/{name.rsplit('/', 1)[1]}"
        assert requests.delete(path, timeout=10).status_code == 204
        assert requests.delete(path, timeout=10).status_code == 404
    remaining = {i["name"] for i in list_all(emu, token, "weight")}
    assert len(remaining) == len(weights) - 2
    assert body["weight"]["name"] not in remaining and old["name"] not in remaining
    assert requests.delete(f"{control}/dataPoints/height/{point_id(old)}", timeout=10).status_code == 404  # wrong type
    assert requests.post(f"{control}/weight", json={"grams": 1}, timeout=10).status_code == 400
    assert requests.post(f"{control}/settings", json={"explode": True}, timeout=10).status_code == 400


def test_stats_by_route_template(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator()
    token = access_token(emu)
    list_page(emu, token, "weight", pageSize=1)
    list_page(emu, token, "height")
    get(emu, token, "/v4/users/me/identity")
    rollup(emu, token, date(2026, 9, 1), date(2026, 9, 8))
    assert emu.stats()["requests"] == {
        "POST /token": 1,
        "GET /v4/users/me/dataTypes/{data_type}/dataPoints": 2,
        "GET /v4/users/me/identity": 1,
        "POST /v4/users/me/dataTypes/{data_type}/dataPoints:dailyRollUp": 1,
    }


# --------------------------------------------------------------------------- determinism and CLI


def test_same_seed_same_data_other_seed_differs(
    everything: dict[str, list[dict[str, Any]]], make_emulator: Callable[..., RunningEmulator]
) -> None:
    twin = make_emulator(seed=42)
    twin_token = access_token(twin)
    for data_type in ("weight", "nutrition-log", "height"):
        assert list_all(twin, twin_token, data_type) == everything[data_type]
    other = make_emulator(seed=43)
    other_weights = list_all(other, access_token(other), "weight")
    assert {i["name"] for i in other_weights}.isdisjoint(i["name"] for i in everything["weight"])


def test_stores_built_on_different_days_agree_on_shared_days() -> None:
    now = time.time()
    today = HealthStore(seed=42, years=1, clock=lambda: now)
    earlier = HealthStore(seed=42, years=1, clock=lambda: now - 3 * 86400)
    window = (now - 300 * 86400, now - 5 * 86400)
    for data_type in ("weight", "body-fat", "nutrition-log"):
        shared = [[p for p in s.listed(data_type) if window[0] < p.time < window[1]] for s in (today, earlier)]
        assert shared[0] == shared[1] != []
    # Time passes: the store catches up past midnight.
    clock = [now]
    moving = HealthStore(seed=42, years=1, clock=lambda: clock[0])
    before = len(moving.listed("nutrition-log"))
    clock[0] += 3 * 86400
    assert len(moving.listed("nutrition-log")) > before


def test_cli_google_flags() -> None:
    args = build_parser().parse_args(
        [
            "--google-years",
            "5",
            "--google-requests-per-minute",
            "7",
            "--google-testing-app",
            "--google-account-not-linked",
        ]
    )
    google = settings_from_args(args).google
    assert (google.years, google.requests_per_minute, google.testing_app, google.account_linked) == (5, 7, True, False)
    assert google.rotate_refresh_tokens is False

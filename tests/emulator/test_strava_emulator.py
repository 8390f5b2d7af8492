"""The Strava emulator, exercised over real HTTP like a client would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

import fitness_emulator
from fitness_emulator import EmulatorSettings, RunningEmulator, StravaSettings, start_emulator
from fitness_emulator.strava_data import OVERFLOW_UPLOAD_ID, ActivityStore

ACTIVITIES = "/api/v3/athlete/activities"
AUTH_INVALID = {
    "message": "Authorization Error",
    "errors": [{"resource": "Athlete", "field": "access_token", "code": "invalid"}],
}
REFRESH_INVALID = {
    "message": "Bad Request",
    "errors": [{"resource": "RefreshToken", "field": "refresh_token", "code": "invalid"}],
}
RATE_LIMITED = {
    "message": "Rate Limit Exceeded",
    "errors": [{"resource": "Application", "field": "rate limit", "code": "exceeded"}],
}

# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def strava_emu() -> Iterator[RunningEmulator]:
    """A default emulator (seed 42) shared by read-only tests."""
    with start_emulator(EmulatorSettings(seed=42)) as running:
        yield running


@pytest.fixture(scope="module")
def full_listing(strava_emu: RunningEmulator) -> list[dict[str, Any]]:
    """Every activity of the default athlete, newest first, fetched over HTTP."""
    return list_all(strava_emu, access_token(strava_emu))


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., RunningEmulator]]:
    """Factory ``make_emulator(seed=42, **strava_settings)``; every emulator is stopped at teardown."""
    started: list[RunningEmulator] = []

    def make(seed: int = 42, **strava: Any) -> RunningEmulator:
        running = start_emulator(EmulatorSettings(seed=seed, strava=StravaSettings(**strava)))
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def refresh(url: str, refresh_token: str | None, path: str = "/oauth/token", **overrides: str) -> requests.Response:
    form = {
        "client_id": "demo-client-id",
        "client_secret": "demo-client-secret",
        "grant_type": "refresh_token",
        "refresh_token": refresh_token or "",
        **overrides,
    }
    return requests.post(f"{url}{path}", data=form, timeout=10)


def current_refresh_token(emu: RunningEmulator) -> str | None:
    connection = requests.get(f"{emu.url}/_emulator/strava/connection", timeout=10).json()
    token: str | None = connection["extra"]["refresh_token"]
    return token


def access_token(emu: RunningEmulator) -> str:
    """A valid access token, obtained the way a client would: connection + refresh."""
    response = refresh(emu.url, current_refresh_token(emu))
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def list_page(emu: RunningEmulator, token: str, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(f"{emu.url}{ACTIVITIES}", params=params, headers=headers, timeout=10)


def list_all(emu: RunningEmulator, token: str, **params: Any) -> list[dict[str, Any]]:
    """Page with per_page=200 until an empty page (a short page is not the end)."""
    items: list[dict[str, Any]] = []
    page = 1
    while batch := list_page(emu, token, page=page, per_page=200, **params).json():
        items.extend(batch)
        page += 1
    return items


def epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def freeze_clock(emu: RunningEmulator, at: float) -> list[float]:
    """Pin the emulator's clock; mutate the returned cell to move time."""
    cell = [at]
    emu.state.clock = lambda: cell[0]
    return cell


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_data_other_seed_differs(
    strava_emu: RunningEmulator, full_listing: list[dict[str, Any]], make_emulator: Callable[..., RunningEmulator]
) -> None:
    twin = make_emulator(seed=42)
    assert list_all(twin, access_token(twin)) == full_listing
    other = make_emulator(seed=43)
    other_listing = list_all(other, access_token(other))
    assert [a["id"] for a in other_listing] != [a["id"] for a in full_listing]
    assert 4 * 52 * 5 * 0.8 < len(full_listing) < 6 * 52 * 5 * 1.1  # ~4-6 per week for 5 years


def test_emulators_started_on_different_days_agree_on_shared_days() -> None:
    now = time.time()
    today = ActivityStore(seed=42, athlete_id=1, years=1, activities=None, clock=lambda: now)
    earlier = ActivityStore(seed=42, athlete_id=1, years=1, activities=None, clock=lambda: now - 3 * 86400)
    cutoff = now - 5 * 86400
    window = now - 300 * 86400

    def shared(store: ActivityStore) -> list[dict[str, Any]]:
        return [a for a in store.iter_listed() if window < epoch(a["start_date"]) < cutoff]

    assert shared(today) == shared(earlier) != []


# --------------------------------------------------------------------------- tokens


def test_refresh_rotation_and_same_token_with_time_left(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator()
    clock = freeze_clock(emu, time.time())
    first = refresh(emu.url, "demo-refresh-token")
    assert first.status_code == 200
    body = first.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 21600
    assert body["expires_at"] == int(clock[0]) + 21600
    assert body["refresh_token"] != "demo-refresh-token"
    assert refresh(emu.url, "demo-refresh-token").json() == REFRESH_INVALID  # rotated away at once

    # More than an hour left: the very same tokens come back, nothing new issued.
    clock[0] += 3600
    again = refresh(emu.url, body["refresh_token"], path="/api/v3/oauth/token").json()
    assert (again["access_token"], again["refresh_token"]) == (body["access_token"], body["refresh_token"])
    assert again["expires_in"] == 21600 - 3600

    # Less than an hour left: new access token and new refresh token; the old refresh token dies.
    clock[0] += 21600 - 3600 - 1800
    rotated = refresh(emu.url, body["refresh_token"]).json()
    assert rotated["access_token"] != body["access_token"]
    assert rotated["refresh_token"] != body["refresh_token"]
    stale = refresh(emu.url, body["refresh_token"])
    assert stale.status_code == 400 and stale.json() == REFRESH_INVALID
    assert list_page(emu, rotated["access_token"]).status_code == 200

    stats = emu.stats()
    assert stats["token_refreshes"] == 2
    assert stats["token_requests"] == 5
    assert stats["requests"]["POST /oauth/token"] == 4
    assert stats["requests"]["POST /api/v3/oauth/token"] == 1


def test_bad_client_and_authorization_code(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator()
    wrong = refresh(emu.url, "demo-refresh-token", client_secret="nope")
    assert wrong.status_code == 401
    assert wrong.json() == {
        "message": "Bad Request",
        "errors": [{"resource": "Application", "field": "client_id", "code": "invalid"}],
    }
    code = refresh(emu.url, None, grant_type="authorization_code", code="demo-code")
    assert code.status_code == 200
    assert code.json()["athlete"]["id"] == 28416793
    assert current_refresh_token(emu) == code.json()["refresh_token"]


def test_unauthorized_shapes(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(access_token_ttl=600)
    token = access_token(emu)
    url = f"{emu.url}{ACTIVITIES}"
    for headers in ({}, {"Authorization": "Token abc"}, {"Authorization": "Bearer"}, {"Authorization": "Bearer x"}):
        response = requests.get(url, headers=headers, timeout=10)
        assert response.status_code == 401 and response.json() == AUTH_INVALID, headers
    freeze_clock(emu, time.time() + 601)  # expired
    assert list_page(emu, token).json() == AUTH_INVALID

    no_scope = make_emulator(scope="read,profile:read_all")
    response = list_page(no_scope, access_token(no_scope))
    assert response.status_code == 401
    assert response.json() == {
        "message": "Authorization Error",
        "errors": [{"resource": "AccessToken", "field": "activity:read_permission", "code": "missing"}],
    }


def test_revoke_kills_all_tokens(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator()
    token = access_token(emu)
    refresh_token = current_refresh_token(emu)
    assert requests.post(f"{emu.url}/_emulator/strava/revoke", timeout=10).status_code == 200
    assert list_page(emu, token).status_code == 401
    assert refresh(emu.url, refresh_token).json() == REFRESH_INVALID
    assert current_refresh_token(emu) is None


# --------------------------------------------------------------------------- listing


def test_paging_covers_every_activity_once(strava_emu: RunningEmulator, full_listing: list[dict[str, Any]]) -> None:
    ids = [a["id"] for a in full_listing]
    assert len(ids) == len(set(ids))
    assert set(ids) == {a["id"] for a in strava_emu.state.strava.activities.iter_listed()}
    starts = [epoch(a["start_date"]) for a in full_listing]
    assert starts == sorted(starts, reverse=True)  # no 'after': newest first
    assert max(starts) <= time.time()  # only activities already started
    assert list_page(strava_emu, access_token(strava_emu), page=10_000, per_page=200).json() == []


def test_after_ascending_before_descending(strava_emu: RunningEmulator, full_listing: list[dict[str, Any]]) -> None:
    token = access_token(strava_emu)
    middle = epoch(full_listing[len(full_listing) // 2]["start_date"])
    ascending = list_all(strava_emu, token, after=middle)
    starts = [epoch(a["start_date"]) for a in ascending]
    assert starts == sorted(starts) and min(starts) > middle
    assert len(ascending) == sum(epoch(a["start_date"]) > middle for a in full_listing)

    descending = list_page(strava_emu, token, before=middle, per_page=50).json()
    starts = [epoch(a["start_date"]) for a in descending]
    assert starts == sorted(starts, reverse=True) and max(starts) < middle and len(starts) == 50

    window = list_all(strava_emu, token, after=middle - 30 * 86400, before=middle)
    assert all(middle - 30 * 86400 < epoch(a["start_date"]) < middle for a in window)
    default_page = list_page(strava_emu, token).json()
    assert default_page == full_listing[:30]  # page 1, per_page 30 by default
    capped = list_page(strava_emu, token, per_page=500).json()
    assert len(capped) == 200


def test_only_me_hidden_without_read_all(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(scope="read,activity:read")
    token = access_token(emu)
    pages: list[list[dict[str, Any]]] = []
    while batch := list_page(emu, token, page=len(pages) + 1, per_page=50).json():
        pages.append(batch)
    listed = [a for page in pages for a in page]
    assert all(a["visibility"] != "only_me" for a in listed)
    hidden = emu.state.strava.find_activities(lambda a: a["visibility"] == "only_me")
    assert hidden and all(a["private"] for a in hidden)
    assert len(listed) + len(hidden) == len(list(emu.state.strava.activities.iter_listed()))
    assert any(len(page) < 50 for page in pages[:-1])  # a short page that is not the last


@pytest.mark.parametrize(
    ("name", "value"),
    [("after", "1700000000000"), ("before", "1700000000000"), ("after", "1.5"), ("per_page", "abc")],
)
def test_bad_parameters_are_400(strava_emu: RunningEmulator, name: str, value: str) -> None:
    response = list_page(strava_emu, access_token(strava_emu), **{name: value})
    assert response.status_code == 400
    assert response.json() == {
        "message": "Bad Request",
        "errors": [{"resource": "Application", "field": name, "code": "invalid"}],
    }


def test_rate_limit(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(read_limit=(10, 12), overall_limit=(20, 100), rate_window_seconds=5)
    clock = freeze_clock(emu, (time.time() // 5) * 5 + 1)
    token = access_token(emu)
    for used in range(1, 11):
        response = list_page(emu, token, per_page=1)
        assert response.status_code == 200
        assert response.headers["X-ReadRateLimit-Usage"] == f"{used},{used}"
    limited = list_page(emu, token, per_page=1)
    assert limited.status_code == 429 and limited.json() == RATE_LIMITED
    assert limited.headers["X-RateLimit-Limit"] == "20,100"
    assert limited.headers["X-RateLimit-Usage"] == "11,11"
    assert limited.headers["X-ReadRateLimit-Limit"] == "10,12"
    assert limited.headers["X-ReadRateLimit-Usage"] == "11,11"
    assert "Retry-After" not in limited.headers

    clock[0] += 5  # next window: the window count resets, the daily one does not
    assert list_page(emu, token, per_page=1).headers["X-ReadRateLimit-Usage"] == "1,12"
    daily = list_page(emu, token, per_page=1)
    assert daily.status_code == 429 and daily.headers["X-ReadRateLimit-Usage"] == "2,13"
    assert emu.stats()["rate_limited"] == 2
    assert refresh(emu.url, current_refresh_token(emu)).status_code == 200  # token endpoint not limited


# --------------------------------------------------------------------------- faults


def test_fault_switches(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator()
    faults = f"{emu.url}/_emulator/faults"
    token = access_token(emu)

    requests.post(faults, json={"fail_next": 2, "fail_status": 503}, timeout=10).raise_for_status()
    statuses = [list_page(emu, token, per_page=1) for _ in range(3)]
    assert [r.status_code for r in statuses] == [503, 503, 200]
    assert statuses[0].json()["message"] == "Service Unavailable"

    requests.post(faults, json={"slow_next": 1, "slow_seconds": 0.6}, timeout=10).raise_for_status()
    started = time.monotonic()
    assert list_page(emu, token, per_page=1).status_code == 200
    assert time.monotonic() - started >= 0.6
    started = time.monotonic()
    list_page(emu, token, per_page=1)
    assert time.monotonic() - started < 0.5

    requests.post(faults, json={"malformed_next": 1}, timeout=10).raise_for_status()
    broken = list_page(emu, token, per_page=5)
    assert broken.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.text)
    assert len(list_page(emu, token, per_page=5).json()) == 5

    requests.post(faults, json={"token_fail_next": 1, "token_fail_status": 500}, timeout=10).raise_for_status()
    assert refresh(emu.url, current_refresh_token(emu)).status_code == 500
    assert refresh(emu.url, current_refresh_token(emu)).status_code == 200

    requests.post(faults, json={"fail_next": 5}, timeout=10).raise_for_status()
    assert requests.delete(faults, timeout=10).status_code == 204
    assert list_page(emu, token, per_page=1).status_code == 200
    assert requests.post(faults, json={"explode": 1}, timeout=10).status_code == 400


def test_short_page_every(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator()
    token = access_token(emu)
    requests.post(f"{emu.url}/_emulator/faults", json={"short_page_every": 2}, timeout=10).raise_for_status()
    sizes = [len(list_page(emu, token, page=page, per_page=20).json()) for page in (1, 2, 3, 4)]
    assert sizes == [20, 18, 20, 18]


# --------------------------------------------------------------------------- mutations


def test_late_upload_edit_and_delete(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator()
    token = access_token(emu)
    control = f"{emu.url}/_emulator/strava/activities"
    started = datetime.now(UTC) - timedelta(days=2)
    created = requests.post(
        control,
        json={"start_date": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "sport_type": "Padel", "name": "Late one"},
        timeout=10,
    )
    assert created.status_code == 201
    late = created.json()
    assert (late["sport_type"], late["type"], late["name"]) == ("Padel", "Workout", "Late one")
    window = list_all(emu, token, after=epoch(late["start_date"]) - 1)
    assert window[0]["id"] == late["id"]  # ascending: the late upload comes first

    edited = requests.put(f"{control}/{late['id']}", json={"name": "Renamed ✏️"}, timeout=10)
    assert edited.status_code == 200
    assert list_all(emu, token, after=epoch(late["start_date"]) - 1)[0]["name"] == "Renamed ✏️"

    # the newest generated activity (not the late one: the athlete may have done nothing since)
    generated = next(a for a in list_page(emu, token, per_page=5).json() if a["id"] != late["id"])
    requests.put(f"{control}/{generated['id']}", json={"name": "Edited"}, timeout=10).raise_for_status()
    assert {a["id"]: a["name"] for a in list_page(emu, token, per_page=5).json()}[generated["id"]] == "Edited"

    for activity_id in (late["id"], generated["id"]):
        assert requests.delete(f"{control}/{activity_id}", timeout=10).status_code == 204
        assert requests.delete(f"{control}/{activity_id}", timeout=10).status_code == 404
    remaining = {a["id"] for a in list_all(emu, token)}
    assert late["id"] not in remaining and generated["id"] not in remaining


def test_stats_by_route_template(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator()
    token = access_token(emu)
    list_page(emu, token, page=1)
    list_page(emu, token, page=2, per_page=7)
    stats = requests.get(f"{emu.url}/_emulator/stats", timeout=10).json()
    assert stats["requests"] == {"POST /oauth/token": 1, "GET /api/v3/athlete/activities": 2}
    assert requests.delete(f"{emu.url}/_emulator/stats", timeout=10).status_code == 204
    assert emu.stats()["requests"] == {}
    assert requests.get(f"{emu.url}/_emulator/health", timeout=10).status_code == 200


# --------------------------------------------------------------------------- data traps


def test_data_traps(full_listing: list[dict[str, Any]]) -> None:
    long_unicode = [a for a in full_listing if len(a["name"]) > 50 and not a["name"].isascii()]
    assert long_unicode
    no_hr = [a for a in full_listing if not a["manual"] and not a["has_heartrate"]]
    assert no_hr and all("average_heartrate" not in a and "max_heartrate" not in a for a in no_hr)
    manual = [a for a in full_listing if a["manual"]]
    upload_keys = {"upload_id", "upload_id_str", "external_id", "device_name", "average_heartrate"}
    assert manual and all(not upload_keys & a.keys() for a in manual)
    overflow = [a for a in full_listing if a.get("upload_id") == OVERFLOW_UPLOAD_ID]
    assert len(overflow) == 1 and overflow[0]["upload_id_str"] == "987654321234567891234"
    assert OVERFLOW_UPLOAD_ID > 2**63 - 1
    padel = [a for a in full_listing if a["sport_type"] == "Padel"]
    assert padel and all(a["type"] == "Workout" for a in padel)
    trail = next(a for a in full_listing if a["sport_type"] == "TrailRun")
    assert trail["type"] == "Run"
    assert {a["sport_type"] for a in full_listing} >= {
        "Run",
        "Ride",
        "Swim",
        "Walk",
        "Hike",
        "WeightTraining",
        "VirtualRide",
        "TrailRun",
        "GravelRide",
        "Yoga",
    }
    assert any(a["visibility"] == "only_me" and a["private"] for a in full_listing)


def test_local_time_written_with_z_and_dst_correct_offset(full_listing: list[dict[str, Any]]) -> None:
    for activity in full_listing:
        assert activity["start_date"].endswith("Z") and activity["start_date_local"].endswith("Z")
        tz_name = activity["timezone"].split(" ")[-1]
        start = datetime.fromisoformat(activity["start_date"].replace("Z", "+00:00"))
        offset = start.astimezone(ZoneInfo(tz_name)).utcoffset()
        assert offset is not None and activity["utc_offset"] == offset.total_seconds()
        local = datetime.fromisoformat(activity["start_date_local"][:-1])
        assert local == start.replace(tzinfo=None) + offset
    offsets = {(a["timezone"], a["utc_offset"]) for a in full_listing}
    assert ("(GMT-08:00) America/Los_Angeles", -25200.0) in offsets  # label keeps standard time
    assert ("(GMT-08:00) America/Los_Angeles", -28800.0) in offsets
    assert {("(GMT+01:00) Europe/Berlin", 7200.0), ("(GMT+01:00) Europe/Berlin", 3600.0)} <= offsets  # the trip


# --------------------------------------------------------------------------- scale and CLI


def test_hundred_thousand_activities_page_quickly(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(activities=100_000)
    token = access_token(emu)
    started = time.monotonic()
    deep = list_page(emu, token, page=500, per_page=200)
    assert time.monotonic() - started < 1.0
    assert len(deep.json()) == 200
    assert list_page(emu, token, page=501, per_page=200).json() == []
    oldest = list_page(emu, token, after=0, per_page=200).json()
    assert [a["id"] for a in oldest] == sorted(a["id"] for a in oldest)
    assert oldest[0]["id"] == deep.json()[-1]["id"]


def test_cli_prints_ready_and_stops_on_sigterm() -> None:
    devtools_dir = Path(fitness_emulator.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(devtools_dir), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "fitness_emulator", "--port", "0", "--seed", "7", "--read-limit", "5,50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.removeprefix("READY ")
        assert requests.get(f"{url}/_emulator/health", timeout=10).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == ""  # exactly one line on stdout
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

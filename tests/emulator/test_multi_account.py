"""Several athletes (Strava) and users (Google) of one application, over real HTTP.

Each has its own data, tokens and authorization code; a token reads only its owner's
data; rate limits, quotas and faults stay app-wide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from fitness_emulator import EmulatorSettings, GoogleSettings, RunningEmulator, StravaSettings, start_emulator
from fitness_emulator.__main__ import build_parser, settings_from_args
from fitness_emulator.google import METRICS_SCOPE, NUTRITION_SCOPE

DEFAULT_ATHLETE = 28416793
OTHER_ATHLETE = 4242
DEFAULT_USER = "108527364915620845632"
ACTIVITIES = "/api/v3/athlete/activities"
WEIGHTS = "/v4/users/me/dataTypes/weight/dataPoints"
IDENTITY = "/v4/users/me/identity"
REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., RunningEmulator]]:
    """Factory ``make_emulator(strava={...}, google={...})`` (seed 42); every emulator is stopped at teardown."""
    started: list[RunningEmulator] = []

    def make(seed: int = 42, strava: dict[str, Any] | None = None,
             google: dict[str, Any] | None = None) -> RunningEmulator:
        settings = EmulatorSettings(
            seed=seed, strava=StravaSettings(**(strava or {})), google=GoogleSettings(**(google or {}))
        )
        running = start_emulator(settings)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def post(emu: RunningEmulator, path: str, **kwargs: Any) -> requests.Response:
    return requests.post(f"{emu.url}{path}", timeout=10, **kwargs)


def get(emu: RunningEmulator, path: str, token: str | None = None, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{emu.url}{path}", params=params, headers=headers, timeout=30)


# --------------------------------------------------------------------------- Strava helpers


def strava_token(emu: RunningEmulator, **form: str) -> requests.Response:
    return post(emu, "/oauth/token", data={"client_id": "demo-client-id", "client_secret": "demo-client-secret",
                                           **form})


def strava_access(emu: RunningEmulator, refresh_token: str) -> str:
    response = strava_token(emu, grant_type="refresh_token", refresh_token=refresh_token)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def add_athlete(emu: RunningEmulator, athlete_id: int = OTHER_ATHLETE, **body: Any) -> dict[str, Any]:
    response = post(emu, "/_emulator/strava/athletes", json={"athlete_id": athlete_id, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def list_activities(emu: RunningEmulator, token: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = 1
    while batch := get(emu, ACTIVITIES, token, page=page, per_page=200).json():
        items.extend(batch)
        page += 1
    return items


def athletes(emu: RunningEmulator) -> dict[int, dict[str, Any]]:
    listed = get(emu, "/_emulator/strava/athletes").json()["athletes"]
    return {a["athlete_id"]: a for a in listed}


def strava_connection_token(emu: RunningEmulator, **params: Any) -> str | None:
    token: str | None = get(emu, "/_emulator/strava/connection", **params).json()["extra"]["refresh_token"]
    return token


def consent_redirect(emu: RunningEmulator, path: str, **query: str) -> dict[str, list[str]]:
    response = requests.get(f"{emu.url}{path}", params=query, allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)


# --------------------------------------------------------------------------- Strava


def test_athletes_have_own_activities_tokens_and_codes(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(strava={"years": 1})
    created = add_athlete(emu)
    assert created == {
        "athlete_id": OTHER_ATHLETE,
        "refresh_token": f"demo-refresh-token-{OTHER_ATHLETE}",
        "authorization_code": f"demo-code-{OTHER_ATHLETE}",
    }
    for taken in (OTHER_ATHLETE, DEFAULT_ATHLETE):
        assert post(emu, "/_emulator/strava/athletes", json={"athlete_id": taken}).status_code == 409
    for bad in ({}, {"athlete_id": "x"}, {"athlete_id": 0}, {"athlete_id": 5, "years": -1}, {"athlete_id": 5, "x": 1}):
        assert post(emu, "/_emulator/strava/athletes", json=bad).status_code == 400, bad

    exchanged = strava_token(emu, grant_type="authorization_code", code=created["authorization_code"]).json()
    assert exchanged["athlete"]["id"] == OTHER_ATHLETE
    theirs = list_activities(emu, exchanged["access_token"])
    mine = list_activities(emu, strava_access(emu, "demo-refresh-token"))
    assert theirs and mine
    assert {a["athlete"]["id"] for a in theirs} == {OTHER_ATHLETE}
    assert {a["athlete"]["id"] for a in mine} == {DEFAULT_ATHLETE}
    assert {a["id"] for a in theirs}.isdisjoint(a["id"] for a in mine)
    assert [a["start_date"] for a in theirs] != [a["start_date"] for a in mine]
    listed = athletes(emu)
    assert listed == {
        DEFAULT_ATHLETE: {"athlete_id": DEFAULT_ATHLETE, "activities": len(mine), "revoked": False},
        OTHER_ATHLETE: {"athlete_id": OTHER_ATHLETE, "activities": len(theirs), "revoked": False},
    }
    # the other athlete's refresh token rotated (it was exchanged for a code): the connection shows the newest
    assert strava_connection_token(emu, athlete_id=OTHER_ATHLETE) == exchanged["refresh_token"]
    assert strava_connection_token(emu) == strava_connection_token(emu, athlete_id=DEFAULT_ATHLETE)

    # deterministic from the seed and the athlete id
    twin = make_emulator(strava={"years": 1})
    add_athlete(twin)
    assert list_activities(twin, strava_access(twin, created["refresh_token"])) == theirs
    another = add_athlete(twin, OTHER_ATHLETE + 1)
    assert list_activities(twin, strava_access(twin, another["refresh_token"])) != theirs
    other_seed = make_emulator(seed=43, strava={"years": 1})
    add_athlete(other_seed)
    assert list_activities(other_seed, strava_access(other_seed, created["refresh_token"])) != theirs


def test_a_token_reads_only_its_own_athlete(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(strava={"years": 1})
    created = add_athlete(emu, activities=30)
    theirs = list_activities(emu, strava_access(emu, created["refresh_token"]))
    assert len(theirs) == 30
    mine = strava_access(emu, "demo-refresh-token")
    assert not {a["id"] for a in theirs} & {a["id"] for a in list_activities(emu, mine)}

    # control endpoints act on the athlete named by ?athlete_id= (default: the default athlete)
    control = "/_emulator/strava/activities"
    their_id = theirs[0]["id"]
    assert get(emu, f"{control}/{their_id}").status_code == 404
    assert get(emu, f"{control}/{their_id}", athlete_id=OTHER_ATHLETE).json()["id"] == their_id
    assert get(emu, f"{control}/{their_id}", athlete_id=999).status_code == 404  # unknown athlete
    assert get(emu, f"{control}/{their_id}", athlete_id="abc").status_code == 400
    start = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    late = post(emu, control, params={"athlete_id": OTHER_ATHLETE}, json={"start_date": start, "name": "Theirs"})
    assert late.status_code == 201 and late.json()["athlete"]["id"] == OTHER_ATHLETE
    their_token = strava_access(emu, strava_connection_token(emu, athlete_id=OTHER_ATHLETE) or "")
    assert late.json()["id"] in {a["id"] for a in list_activities(emu, their_token)}
    assert late.json()["id"] not in {a["id"] for a in list_activities(emu, mine)}
    renamed = requests.put(f"{emu.url}{control}/{their_id}", params={"athlete_id": OTHER_ATHLETE},
                           json={"name": "Renamed"}, timeout=10)
    assert renamed.json()["name"] == "Renamed"
    assert requests.delete(f"{emu.url}{control}/{their_id}", timeout=10).status_code == 404  # not the default's
    deleted = requests.delete(f"{emu.url}{control}/{their_id}", params={"athlete_id": OTHER_ATHLETE}, timeout=10)
    assert deleted.status_code == 204
    assert their_id not in {a["id"] for a in list_activities(emu, their_token)}

    stats = emu.stats()["requests_by_athlete"]
    assert set(stats) == {str(DEFAULT_ATHLETE), str(OTHER_ATHLETE)} and all(stats.values())


def test_athletes_share_the_application_rate_limit(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(strava={"years": 1, "read_limit": (3, 100)})
    created = add_athlete(emu)
    first = strava_access(emu, "demo-refresh-token")
    second = strava_access(emu, created["refresh_token"])
    answers = [get(emu, ACTIVITIES, token, per_page=1) for token in (first, first, second, second)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["X-ReadRateLimit-Usage"] for r in answers] == ["1,1", "2,2", "3,3", "4,4"]
    assert get(emu, ACTIVITIES, first, per_page=1).status_code == 429
    assert emu.stats()["rate_limited"] == 2
    assert requests.delete(f"{emu.url}/_emulator/strava/rate-limits", timeout=10).status_code == 204
    assert get(emu, ACTIVITIES, second, per_page=1).status_code == 200


def test_revoking_one_athlete_leaves_the_others_working(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(strava={"years": 1})
    created = add_athlete(emu)
    theirs = strava_access(emu, created["refresh_token"])
    their_refresh = strava_connection_token(emu, athlete_id=OTHER_ATHLETE)
    mine = strava_access(emu, "demo-refresh-token")
    assert post(emu, "/_emulator/strava/revoke", params={"athlete_id": OTHER_ATHLETE}).json() == {"revoked": True}
    assert get(emu, ACTIVITIES, theirs).status_code == 401
    assert strava_token(emu, grant_type="refresh_token", refresh_token=their_refresh or "").status_code == 400
    assert strava_connection_token(emu, athlete_id=OTHER_ATHLETE) is None
    assert get(emu, ACTIVITIES, mine).status_code == 200
    assert strava_connection_token(emu) is not None
    assert {i: a["revoked"] for i, a in athletes(emu).items()} == {DEFAULT_ATHLETE: False, OTHER_ATHLETE: True}

    # consenting again re-authorizes
    again = strava_token(emu, grant_type="authorization_code", code=created["authorization_code"])
    assert get(emu, ACTIVITIES, again.json()["access_token"]).status_code == 200
    assert not athletes(emu)[OTHER_ATHLETE]["revoked"]


def test_consent_page_answers_for_the_logged_in_athlete(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(strava={"years": 1})
    add_athlete(emu)
    authorize = {"client_id": "demo-client-id", "redirect_uri": REDIRECT, "response_type": "code",
                 "scope": "read,activity:read_all", "state": "s1"}
    consent = "/_emulator/strava/consent"
    answer = post(emu, consent, json={"athlete_id": OTHER_ATHLETE, "scope": "read,activity:read"})
    assert answer.json() == {"scope": "read,activity:read", "deny": False, "athlete_id": OTHER_ATHLETE}
    redirect = consent_redirect(emu, "/oauth/authorize", **authorize)
    assert redirect["code"] == [f"demo-code-{OTHER_ATHLETE}"] and redirect["scope"] == ["read"]
    exchanged = strava_token(emu, grant_type="authorization_code", code=redirect["code"][0]).json()
    assert exchanged["athlete"]["id"] == OTHER_ATHLETE

    assert post(emu, consent, json={}).json()["athlete_id"] == DEFAULT_ATHLETE  # default athlete again
    redirect = consent_redirect(emu, "/oauth/authorize", **authorize)
    assert redirect["code"] == ["demo-code"] and redirect["scope"] == ["read,activity:read_all"]
    assert post(emu, consent, json={"athlete_id": 999}).status_code == 404
    assert post(emu, consent, json={"athlete_id": True}).status_code == 400


def test_extra_athletes_setting_and_cli(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(strava={"years": 1, "extra_athletes": 2})
    assert list(athletes(emu)) == [DEFAULT_ATHLETE, DEFAULT_ATHLETE + 1, DEFAULT_ATHLETE + 2]
    token = strava_access(emu, f"demo-refresh-token-{DEFAULT_ATHLETE + 2}")
    assert {a["athlete"]["id"] for a in list_activities(emu, token)} == {DEFAULT_ATHLETE + 2}

    args = build_parser().parse_args(["--extra-athletes", "3", "--google-extra-users", "4"])
    settings = settings_from_args(args)
    assert (settings.strava.extra_athletes, settings.google.extra_users) == (3, 4)
    assert settings_from_args(build_parser().parse_args([])).strava.extra_athletes == 0


# --------------------------------------------------------------------------- Google helpers


def google_token(emu: RunningEmulator, **form: str) -> requests.Response:
    return post(emu, "/token", data={"client_id": "demo-google-client-id",
                                     "client_secret": "demo-google-client-secret", **form})


def google_access(emu: RunningEmulator, refresh_token: str) -> str:
    response = google_token(emu, grant_type="refresh_token", refresh_token=refresh_token)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def add_user(emu: RunningEmulator, **body: Any) -> dict[str, Any]:
    response = post(emu, "/_emulator/google/users", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def weight_names(emu: RunningEmulator, token: str) -> list[str]:
    names: list[str] = []
    page_token = None
    while True:
        body = get(emu, WEIGHTS, token, pageSize=1000, **({"pageToken": page_token} if page_token else {})).json()
        names.extend(item["name"] for item in body.get("dataPoints", []))
        page_token = body.get("nextPageToken")
        if not page_token:
            return names


# --------------------------------------------------------------------------- Google


def test_google_users_have_own_data_tokens_and_identity(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(google={"years": 1})
    generated = add_user(emu)
    next_id = str(int(DEFAULT_USER) + 1)
    assert generated == {
        "user_id": next_id,
        "refresh_token": f"demo-google-refresh-token-{next_id}",
        "authorization_code": f"demo-google-code-{next_id}",
    }
    alice = add_user(emu, user_id="alice")
    assert post(emu, "/_emulator/google/users", json={"user_id": "alice"}).status_code == 409
    assert post(emu, "/_emulator/google/users", json={"user_id": DEFAULT_USER}).status_code == 409
    assert post(emu, "/_emulator/google/users", json={"user_id": "a/b"}).status_code == 400
    listed = get(emu, "/_emulator/google/users").json()["users"]
    assert [u["user_id"] for u in listed] == [DEFAULT_USER, next_id, "alice"]
    assert all(u["points"]["weight"] > 0 and not u["revoked"] for u in listed)

    mine = google_access(emu, "demo-google-refresh-token")
    hers = google_access(emu, alice["refresh_token"])
    assert get(emu, IDENTITY, hers).json()["healthUserId"] == "alice"
    assert get(emu, IDENTITY, hers).json()["legacyUserId"] != "B7K2QX"
    assert get(emu, IDENTITY, mine).json() == {
        "name": "users/me/identity", "healthUserId": DEFAULT_USER, "legacyUserId": "B7K2QX"}
    my_names, her_names = weight_names(emu, mine), weight_names(emu, hers)
    assert my_names and her_names
    assert all(n.startswith(f"users/{DEFAULT_USER}/") for n in my_names)
    assert all(n.startswith("users/alice/") for n in her_names)
    ids = [{n.rsplit("/", 1)[1] for n in names} for names in (my_names, her_names)]
    assert ids[0].isdisjoint(ids[1])
    exchanged = google_token(emu, grant_type="authorization_code", code=alice["authorization_code"],
                             redirect_uri=REDIRECT)
    assert get(emu, IDENTITY, exchanged.json()["access_token"]).json()["healthUserId"] == "alice"

    # control endpoints act on ?user_id= (default: the default user)
    at = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    created = post(emu, "/_emulator/google/weight", params={"user_id": "alice"},
                   json={"physicalTime": at, "grams": 61000})
    assert created.status_code == 201
    new_name = created.json()["weight"]["name"]
    assert new_name.startswith("users/alice/")
    assert new_name in weight_names(emu, hers) and new_name not in weight_names(emu, mine)
    path = f"/_emulator/google/dataPoints/weight/{new_name.rsplit('/', 1)[1]}"
    assert requests.delete(f"{emu.url}{path}", timeout=10).status_code == 404  # not the default user's
    assert requests.delete(f"{emu.url}{path}", params={"user_id": "alice"}, timeout=10).status_code == 204
    assert get(emu, "/_emulator/google/connection", user_id="nobody").status_code == 404
    by_user = emu.stats()["google_requests_by_user"]
    assert by_user[DEFAULT_USER] > 0 and by_user["alice"] > 0

    twin = make_emulator(google={"years": 1})
    add_user(twin, user_id="alice")
    assert weight_names(twin, google_access(twin, alice["refresh_token"])) == her_names


def test_google_revoke_isolation_consent_and_shared_switches(make_emulator: Callable[..., RunningEmulator]) -> None:
    emu = make_emulator(google={"years": 1, "extra_users": 1, "requests_per_minute": 3})
    other = str(int(DEFAULT_USER) + 1)
    connection = get(emu, "/_emulator/fitbit/connection", user_id=other).json()
    assert connection["extra"]["refresh_token"] == f"demo-google-refresh-token-{other}"
    theirs = google_access(emu, connection["extra"]["refresh_token"])
    mine = google_access(emu, "demo-google-refresh-token")

    # the per-minute quota is the client's (as today), shared by every user
    now = time.time()
    emu.state.clock = lambda: (now // 60) * 60 + 1
    answers = [get(emu, IDENTITY, token).status_code for token in (mine, theirs, theirs, mine)]
    assert answers == [200, 200, 200, 429]
    requests.delete(f"{emu.url}/_emulator/google/rate-limits", timeout=10).raise_for_status()

    assert post(emu, "/_emulator/google/revoke", params={"user_id": other}).json() == {"revoked": True}
    assert get(emu, IDENTITY, theirs).status_code == 401
    revoked = google_token(emu, grant_type="refresh_token", refresh_token=connection["extra"]["refresh_token"])
    assert revoked.status_code == 400 and revoked.json()["error"] == "invalid_grant"
    assert get(emu, "/_emulator/google/connection", user_id=other).json()["extra"]["refresh_token"] is None
    assert get(emu, IDENTITY, mine).status_code == 200
    assert google_token(emu, grant_type="refresh_token", refresh_token="demo-google-refresh-token").ok
    users = {u["user_id"]: u["revoked"] for u in get(emu, "/_emulator/google/users").json()["users"]}
    assert users == {DEFAULT_USER: False, other: True}

    # the consent page answers for the signed-in user; the app-wide settings reach every user
    assert post(emu, "/_emulator/google/settings", json={"rotate_refresh_tokens": True}).ok
    answer = post(emu, "/_emulator/google/consent", json={"user_id": other})
    assert answer.json() == {"deny": False, "user_id": other}
    redirect = consent_redirect(emu, "/o/oauth2/v2/auth", client_id="demo-google-client-id", redirect_uri=REDIRECT,
                                response_type="code", scope=f"{METRICS_SCOPE} {NUTRITION_SCOPE}",
                                access_type="offline", state="s")
    assert redirect["code"] == [f"demo-google-code-{other}"]
    exchanged = google_token(emu, grant_type="authorization_code", code=redirect["code"][0], redirect_uri=REDIRECT)
    assert get(emu, IDENTITY, exchanged.json()["access_token"]).json()["healthUserId"] == other
    rotated = google_token(emu, grant_type="refresh_token", refresh_token=exchanged.json()["refresh_token"])
    assert rotated.json()["refresh_token"] != exchanged.json()["refresh_token"]
    assert post(emu, "/_emulator/google/consent", json={}).json()["user_id"] == DEFAULT_USER
    assert post(emu, "/_emulator/google/consent", json={"user_id": "nobody"}).status_code == 404

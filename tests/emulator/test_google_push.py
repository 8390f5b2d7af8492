"""Google Health webhooks in the emulator, against the real receiver under uvicorn on a real PostgreSQL: the
subscribers API with Google's endpoint verification, signed notifications of data changes stored as rows, and
delivery faults (duplicates, losses, delays, retries)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.helpers import query
from tests.webhook_receiver import google_receiver

SECRET = "Bearer " + "s3cr3t-" * 6
PROJECT = "fitness-test-project"
CLOUD = {"Authorization": "Bearer ya29.cloud-token"}
DEFAULT_USER = "108527364915620845632"
ALL_TYPES = ["weight", "body-fat", "height", "nutrition-log"]


@pytest.fixture
def emulator(make_emulator: Callable[..., Any]) -> Any:
    return make_emulator()


@pytest.fixture
def endpoint(emulator: Any, schema: Any) -> Iterator[str]:
    """The receiver's Google endpoint, configured with SECRET and the emulator's public key."""
    with google_receiver(emulator.url, SECRET) as url:
        yield url


def subscribers_url(emulator: Any, *parts: str) -> str:
    return "/".join([f"{emulator.url}/v4/projects/{PROJECT}/subscribers", *parts])


def create(emulator: Any, endpoint_uri: str, subscriber_id: str = "fitness-sync", secret: str = SECRET,
           data_types: list[str] | None = None, policy: str = "AUTOMATIC") -> requests.Response:
    body = {"endpointUri": endpoint_uri,
            "subscriberConfigs": [{"dataTypes": data_types or ALL_TYPES, "subscriptionCreatePolicy": policy}],
            "endpointAuthorization": {"secret": secret}}
    return requests.post(subscribers_url(emulator), params={"subscriberId": subscriber_id}, json=body, headers=CLOUD,
                         timeout=30)


def subscribe(emulator: Any, endpoint_uri: str, **kwargs: Any) -> dict[str, Any]:
    answer = create(emulator, endpoint_uri, **kwargs)
    assert answer.status_code == 200, answer.text
    return answer.json()


def control(emulator: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{emulator.url}/_emulator/google{path}", timeout=30, **kwargs)


def settle(emulator: Any) -> dict[str, Any]:
    """Wait until the emulator has no delivery pending; its push view."""
    view: dict[str, Any] = control(emulator, "GET", "/push", params={"wait": 20}).json()
    assert view["pending"] == 0
    return view


def rows(conn: Any) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [(provider, account, json.loads(payload)) for provider, account, payload in
            query(conn, "SELECT provider, account_id, payload FROM webhook_event ORDER BY id")]


def add_weight(emulator: Any, user: str | None = None, **changes: Any) -> dict[str, Any]:
    body = {"physicalTime": "2026-03-08T01:31:10Z", "utcOffset": -28800, "grams": 80500, **changes}
    answer = control(emulator, "POST", "/weight", json=body, params={"user_id": user} if user else None)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def point_id(item: dict[str, Any]) -> str:
    return str(item["name"].rsplit("/", 1)[1])


# --------------------------------------------------------------------------- public key and subscribers


@pytest.fixture
def seven() -> Iterator[Any]:
    """An emulator of another seed (7): another signing key."""
    from fitness_emulator import EmulatorSettings, GoogleSettings, StravaSettings, start_emulator

    with start_emulator(EmulatorSettings(seed=7, strava=StravaSettings(years=1),
                                         google=GoogleSettings(years=1))) as running:
        yield running


def test_the_public_key_is_a_p256_pem_of_the_seed(make_emulator: Callable[..., Any], seven: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pems = [control(e, "GET", "/public-key").text for e in (make_emulator(), make_emulator(), seven)]
    key = serialization.load_pem_public_key(pems[0].encode())
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert pems[0].startswith("-----BEGIN PUBLIC KEY-----")
    assert pems[0] == pems[1] and pems[0] != pems[2]  # a pure function of the seed


def test_subscribers_are_created_after_verification_listed_and_deleted(emulator: Any, endpoint: str,
                                                                       schema: Any) -> None:
    assert requests.get(subscribers_url(emulator), timeout=10).status_code == 401
    assert requests.get(subscribers_url(emulator), headers={"Authorization": "Bearer "}, timeout=10) \
        .status_code == 401
    assert requests.get(subscribers_url(emulator), headers=CLOUD, timeout=10).json() == {}

    operation = subscribe(emulator, endpoint, data_types=["weight", "nutrition-log"])
    assert operation["done"] is True and operation["name"].startswith(f"projects/{PROJECT}/operations/")
    resource = {k: v for k, v in operation["response"].items() if k != "@type"}
    assert resource["name"] == f"projects/{PROJECT}/subscribers/fitness-sync"
    assert resource["endpointUri"] == endpoint
    assert resource["subscriberConfigs"] == [{"dataTypes": ["weight", "nutrition-log"],
                                              "subscriptionCreatePolicy": "AUTOMATIC"}]
    assert resource["endpointAuthorization"] == {"secretSet": True}
    assert "s3cr3t" not in json.dumps(operation)

    listed = requests.get(subscribers_url(emulator), headers=CLOUD, timeout=10).json()
    assert listed == {"subscribers": [resource]}
    assert "s3cr3t" not in json.dumps(listed)
    other_project = requests.get(f"{emulator.url}/v4/projects/another/subscribers", headers=CLOUD, timeout=10)
    assert other_project.json() == {}

    again = create(emulator, endpoint)
    assert again.status_code == 409 and again.json()["error"]["status"] == "ALREADY_EXISTS"

    deleted = requests.delete(subscribers_url(emulator, "fitness-sync"), headers=CLOUD, timeout=10)
    assert deleted.status_code == 200 and deleted.json()["done"] is True
    assert requests.get(subscribers_url(emulator), headers=CLOUD, timeout=10).json() == {}
    missing = requests.delete(subscribers_url(emulator, "fitness-sync"), headers=CLOUD, timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
    assert rows(schema) == []  # verification requests are not stored


@pytest.mark.parametrize(("changes", "field"), [
    ({"subscriber_id": "Fitness"}, "subscriberId"),
    ({"subscriber_id": "abc"}, "subscriberId"),  # 4 characters at least
    ({"subscriber_id": "fitness-"}, "subscriberId"),
    ({"data_types": ["bodyFat"]}, "dataTypes"),
    ({"policy": "SOMETIMES"}, "subscriptionCreatePolicy"),
    ({"secret": ""}, "secret"),
])
def test_a_bad_create_request_is_refused_before_verification(emulator: Any, changes: dict[str, Any],
                                                             field: str) -> None:
    answer = create(emulator, "http://127.0.0.1:9/google", **changes)  # nothing listens there: never reached
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and field in error["message"]


def test_a_failed_verification_creates_nothing(emulator: Any, endpoint: str, schema: Any) -> None:
    for secret, expected in (("Bearer another-secret", "401, expected 201"), (SECRET + "x", "401, expected 201")):
        answer = create(emulator, endpoint, secret=secret)
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["status"] == "FAILED_PRECONDITION" and expected in error["message"]
        assert error["details"][0]["reason"] == "ENDPOINT_VERIFICATION_FAILED"
        assert "another-secret" not in answer.text
    unreachable = create(emulator, "http://127.0.0.1:9/google")
    assert unreachable.status_code == 400 and "could not be reached" in unreachable.json()["error"]["message"]
    assert requests.get(subscribers_url(emulator), headers=CLOUD, timeout=10).json() == {}


def test_an_endpoint_that_lets_anyone_in_fails_the_second_verification(emulator: Any) -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from fitness_devtools.webhooks import serve_app

    async def anything(_request: Any) -> JSONResponse:
        return JSONResponse({}, status_code=201)

    with serve_app(Starlette(routes=[Route("/google", anything, methods=["POST"])])) as url:
        answer = create(emulator, f"{url}/google")
    assert answer.status_code == 400
    assert "without Authorization was answered 201, expected 401 or 403" in answer.json()["error"]["message"]


# --------------------------------------------------------------------------- notifications


def test_changes_of_weight_and_nutrition_arrive_signed_and_are_stored_as_rows(emulator: Any, endpoint: str,
                                                                              schema: Any) -> None:
    subscribe(emulator, endpoint, data_types=["weight", "body-fat", "nutrition-log"])
    created = add_weight(emulator, bodyFatPercentage=21.4)
    view = settle(emulator)
    ((delivery,),) = [view["deliveries"]]
    assert delivery["status"] == "delivered" and delivery["attempts"] == [200]
    assert [n["dataType"] for n in delivery["notifications"]] == ["weight", "body-fat"]  # one body, two objects
    stored = rows(schema)
    assert [(p, a, n["data"]["dataType"], n["data"]["operation"]) for p, a, n in stored] == [
        ("google", DEFAULT_USER, "weight", "UPSERT"), ("google", DEFAULT_USER, "body-fat", "UPSERT")]
    data = stored[0][2]["data"]
    assert data["version"] == "1" and data["clientProvidedSubscriptionName"] == "fitness-sync"
    assert data["intervals"] == [{
        "physicalTimeInterval": {"startTime": "2026-03-08T01:31:00Z", "endTime": "2026-03-08T01:32:00Z"},
        "civilDateTimeInterval": {  # -08:00: the evening before, local time
            "startDateTime": {"date": {"year": 2026, "month": 3, "day": 7}, "time": {"hours": 17, "minutes": 31}},
            "endDateTime": {"date": {"year": 2026, "month": 3, "day": 7}, "time": {"hours": 17, "minutes": 32}}}}]

    weight_id = point_id(created["weight"])
    assert control(emulator, "DELETE", f"/dataPoints/weight/{weight_id}").status_code == 204
    meal = control(emulator, "POST", "/nutrition", json={
        "startTime": "2026-03-08T03:10:00Z", "endTime": "2026-03-08T03:40:00Z", "kcal": 640, "mealType": "DINNER",
        "foodDisplayName": "Ramen"})
    assert meal.status_code == 201, meal.text
    settle(emulator)
    meal_id = point_id(meal.json()["nutritionLog"])
    assert control(emulator, "DELETE", f"/dataPoints/nutrition-log/{meal_id}").status_code == 204
    # a type nobody subscribed to is not notified
    assert control(emulator, "POST", "/height", json={"physicalTime": "2026-03-08T04:00:00Z",
                                                      "millimeters": 1776}).status_code == 201
    settle(emulator)
    changes = [(n["data"]["dataType"], n["data"]["operation"]) for _, _, n in rows(schema)]
    assert changes == [("weight", "UPSERT"), ("body-fat", "UPSERT"), ("weight", "DELETE"),
                       ("nutrition-log", "UPSERT"), ("nutrition-log", "DELETE")]
    meal_interval = rows(schema)[3][2]["data"]["intervals"][0]["physicalTimeInterval"]
    assert meal_interval == {"startTime": "2026-03-08T03:10:00Z", "endTime": "2026-03-08T03:41:00Z"}
    # the emulator's own listing agrees: the meal is gone again, and a second delete is a 404 without notification
    assert control(emulator, "DELETE", f"/dataPoints/nutrition-log/{meal_id}").status_code == 404
    assert len(settle(emulator)["deliveries"]) == 4


def test_each_user_is_notified_with_its_own_health_user_id(emulator: Any, endpoint: str, schema: Any) -> None:
    subscribe(emulator, endpoint, data_types=["weight"])
    other = control(emulator, "POST", "/users", json={"user_id": "555000111"}).json()["user_id"]
    add_weight(emulator, user=other)
    add_weight(emulator, physicalTime="2026-03-09T01:31:10Z")
    settle(emulator)
    assert sorted(account for _, account, _ in rows(schema)) == sorted([other, DEFAULT_USER])
    assert {n["data"]["healthUserId"] for _, _, n in rows(schema)} == {other, DEFAULT_USER}


def test_a_manual_policy_or_no_subscriber_sends_nothing(emulator: Any, endpoint: str, schema: Any) -> None:
    add_weight(emulator)
    subscribe(emulator, endpoint, policy="MANUAL")
    add_weight(emulator, physicalTime="2026-03-09T01:31:10Z")
    assert settle(emulator)["deliveries"] == []
    assert rows(schema) == []


# --------------------------------------------------------------------------- delivery faults


def test_duplicated_deliveries_are_stored_once(emulator: Any, endpoint: str, schema: Any) -> None:
    subscribe(emulator, endpoint, data_types=["weight"])
    assert control(emulator, "PUT", "/push", json={"duplicate_rate": 1}).json()["settings"]["duplicate_rate"] == 1
    add_weight(emulator)
    deliveries = settle(emulator)["deliveries"]
    assert [(d["status"], d["duplicate"]) for d in deliveries] == [("delivered", False), ("delivered", True)]
    assert len(rows(schema)) == 1


def test_lost_deliveries_never_arrive(emulator: Any, endpoint: str, schema: Any) -> None:
    subscribe(emulator, endpoint, data_types=["weight"])
    control(emulator, "PUT", "/push", json={"lost_rate": 1})
    add_weight(emulator)
    assert [d["status"] for d in settle(emulator)["deliveries"]] == ["lost"]
    assert rows(schema) == []
    # half lost, reproducibly by seed
    control(emulator, "PUT", "/push", json={"lost_rate": 0.5, "seed": 3})
    for minute in range(10):
        add_weight(emulator, physicalTime=f"2026-03-10T01:{minute:02}:00Z")
    statuses = [d["status"] for d in settle(emulator)["deliveries"][1:]]
    assert 0 < statuses.count("lost") < 10 and statuses.count("lost") + statuses.count("delivered") == 10
    assert len(rows(schema)) == statuses.count("delivered")
    assert control(emulator, "DELETE", "/push").status_code == 204
    assert control(emulator, "GET", "/push").json() == {
        "settings": {"delay_seconds": 0.0, "duplicate_rate": 0.0, "lost_rate": 0.0, "seed": None, "max_attempts": 4,
                     "retry_seconds": 0.2}, "pending": 0, "deliveries": []}


def test_a_delayed_delivery_is_pending_until_it_arrives(emulator: Any, endpoint: str, schema: Any) -> None:
    subscribe(emulator, endpoint, data_types=["weight"])
    control(emulator, "PUT", "/push", json={"delay_seconds": 1.0})
    started = time.monotonic()
    add_weight(emulator)
    view = control(emulator, "GET", "/push").json()
    assert view["pending"] == 1 and view["deliveries"][0]["status"] == "pending"
    assert rows(schema) == []
    settle(emulator)
    assert time.monotonic() - started >= 1.0
    assert len(rows(schema)) == 1


def test_a_refused_delivery_is_retried_then_given_up(emulator: Any, seven: Any, schema: Any) -> None:
    assert control(emulator, "PUT", "/push", json={"max_attempts": 0}).status_code == 400
    assert control(emulator, "PUT", "/push", json={"lost_rate": 2}).status_code == 400
    assert control(emulator, "PUT", "/push", json={"nonsense": 1}).status_code == 400
    control(emulator, "PUT", "/push", json={"max_attempts": 3, "retry_seconds": 0.05})
    # a receiver that trusts another key: the verification passes (it is not signed), every notification is
    # refused as forged
    with google_receiver(seven.url, SECRET) as url:
        subscribe(emulator, url, data_types=["weight"])
        add_weight(emulator)
        (delivery,) = settle(emulator)["deliveries"]
    assert delivery["status"] == "failed" and delivery["attempts"] == [401, 401, 401]
    # the receiver is gone: every attempt fails to connect
    add_weight(emulator, physicalTime="2026-03-09T01:31:10Z")
    failed = settle(emulator)["deliveries"][-1]
    assert failed["status"] == "failed" and len(failed["attempts"]) == 3
    assert all(isinstance(a, str) for a in failed["attempts"])  # e.g. ConnectionError, never a status
    assert rows(schema) == []

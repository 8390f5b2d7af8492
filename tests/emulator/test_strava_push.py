"""Strava's push subscriptions in the emulator, over real HTTP: the subscription API with its validation
handshake, and the events delivered to a callback (a small recording server, and the real receiver)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from fitness_emulator import EmulatorSettings, RunningEmulator, StravaSettings, start_emulator
from fitness_emulator.strava_push import FIRST_SUBSCRIPTION_ID

SUBSCRIPTIONS = "/api/v3/push_subscriptions"
PUSH = "/_emulator/strava/push"
CLIENT = {"client_id": "demo-client-id", "client_secret": "demo-client-secret"}
TOKEN = "verify-" + "v" * 24
DEFAULT_ATHLETE = 28416793
OTHER_ATHLETE = 4242
EVENT_FIELDS = {"object_type", "object_id", "aspect_type", "updates", "owner_id", "subscription_id", "event_time"}


class Recorder(http.server.ThreadingHTTPServer):
    """A callback: answers the handshake when the verify token is ``token``, and each POST with the next of
    ``statuses`` (200 when none is left) after ``delays`` (popped likewise); records every request."""

    daemon_threads = True

    def __init__(self, token: str = TOKEN) -> None:
        super().__init__(("127.0.0.1", 0), RecorderHandler)
        self.token = token
        self.statuses: list[int] = []
        self.delays: list[float] = []
        self.handshakes: list[dict[str, str]] = []
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/strava"


class RecorderHandler(http.server.BaseHTTPRequestHandler):
    server: Recorder

    def answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        params = dict(parse_qsl(urlsplit(self.path).query))
        with self.server.lock:
            self.server.handshakes.append(params)
        if params.get("hub.verify_token") == self.server.token:
            self.answer(200, {"hub.challenge": params.get("hub.challenge")})
        else:
            self.answer(403, {})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.events.append(body)
            status = self.server.statuses.pop(0) if self.server.statuses else 200
            delay = self.server.delays.pop(0) if self.server.delays else 0.0
        time.sleep(delay)
        self.answer(status, {})

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with start_emulator(EmulatorSettings(strava=StravaSettings(years=1, extra_athletes=0))) as running:
        requests.put(f"{running.url}{PUSH}", json={"retry_pause_seconds": 0.05}, timeout=10).raise_for_status()
        yield running


def subscribe(emu: RunningEmulator, callback_url: str, verify_token: str = TOKEN, **form: str) -> requests.Response:
    return requests.post(f"{emu.url}{SUBSCRIPTIONS}", timeout=10,
                         data={**CLIENT, "callback_url": callback_url, "verify_token": verify_token, **form})


def listed(emu: RunningEmulator, **params: str) -> requests.Response:
    return requests.get(f"{emu.url}{SUBSCRIPTIONS}", params={**CLIENT, **params}, timeout=10)


def push_view(emu: RunningEmulator, wait: float = 10) -> dict[str, Any]:
    view = requests.get(f"{emu.url}{PUSH}", params={"wait": wait}, timeout=wait + 10).json()
    assert view["pending"] == 0, "deliveries still pending"
    return view


def control(emu: RunningEmulator, method: str, path: str, **kwargs: Any) -> requests.Response:
    response = requests.request(method, f"{emu.url}/_emulator/strava{path}", timeout=10, **kwargs)
    response.raise_for_status()
    return response


@pytest.fixture
def subscribed(emu: RunningEmulator, recorder: Recorder) -> Callable[[], int]:
    def make() -> int:
        answer = subscribe(emu, recorder.url)
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])

    return make


# --------------------------------------------------------------------------- the subscription API


def test_create_validates_the_callback_then_list_and_delete(emu: RunningEmulator, recorder: Recorder) -> None:
    created = subscribe(emu, recorder.url)
    assert created.status_code == 201 and created.json() == {"id": FIRST_SUBSCRIPTION_ID}
    ((handshake),) = recorder.handshakes  # sent during the create, before its answer
    assert handshake["hub.mode"] == "subscribe" and handshake["hub.verify_token"] == TOKEN
    assert len(handshake["hub.challenge"]) >= 16

    (subscription,) = listed(emu).json()
    assert subscription["id"] == FIRST_SUBSCRIPTION_ID and subscription["callback_url"] == recorder.url
    assert {"application_id", "created_at", "updated_at"} <= set(subscription) and TOKEN not in json.dumps(subscription)

    deleted = requests.delete(f"{emu.url}{SUBSCRIPTIONS}/{FIRST_SUBSCRIPTION_ID}", params=CLIENT, timeout=10)
    assert deleted.status_code == 204 and listed(emu).json() == []
    again = requests.delete(f"{emu.url}{SUBSCRIPTIONS}/{FIRST_SUBSCRIPTION_ID}", params=CLIENT, timeout=10)
    assert again.status_code == 404
    # a new subscription after the delete has a new id
    assert subscribe(emu, recorder.url).json() == {"id": FIRST_SUBSCRIPTION_ID + 1}


def test_a_callback_that_does_not_answer_the_challenge_gets_no_subscription(emu: RunningEmulator,
                                                                            recorder: Recorder) -> None:
    refused = subscribe(emu, recorder.url, verify_token="another-token")
    assert refused.status_code == 400
    assert refused.json() == {"message": "Bad Request", "errors": [
        {"resource": "PushSubscription", "field": "callback url", "code": "GET to callback URL does not return 200"}]}
    assert len(recorder.handshakes) == 1 and listed(emu).json() == []

    assert subscribe(emu, f"http://127.0.0.1:{closed_port()}/strava").status_code == 400  # nothing listens
    assert listed(emu).json() == []


def test_a_callback_slower_than_the_timeout_gets_no_subscription(emu: RunningEmulator, recorder: Recorder) -> None:
    control(emu, "PUT", "/push", json={"timeout_seconds": 0.3})
    slow = Recorder()  # its handshake sleeps: a GET handler that blocks longer than the timeout
    slow.RequestHandlerClass = type("Slow", (RecorderHandler,), {
        "do_GET": lambda self: (time.sleep(1.0), RecorderHandler.do_GET(self))})
    thread = threading.Thread(target=slow.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        assert subscribe(emu, slow.url).status_code == 400
        assert time.monotonic() - started < 0.9
    finally:
        slow.shutdown()
        slow.server_close()
    assert listed(emu).json() == []


def test_one_subscription_per_application(emu: RunningEmulator, subscribed: Callable[[], int],
                                          recorder: Recorder) -> None:
    subscribed()
    second = subscribe(emu, recorder.url + "?second")
    assert second.status_code == 400 and second.json()["errors"][0]["code"] == "already exists"
    assert len(listed(emu).json()) == 1


def test_wrong_client_credentials_are_refused(emu: RunningEmulator, recorder: Recorder) -> None:
    assert subscribe(emu, recorder.url, client_secret="wrong").status_code == 401
    assert recorder.handshakes == []  # refused before any handshake
    assert listed(emu, client_secret="wrong").status_code == 401
    assert subscribe(emu, recorder.url).status_code == 201
    bad = requests.delete(f"{emu.url}{SUBSCRIPTIONS}/{FIRST_SUBSCRIPTION_ID}",
                          params={**CLIENT, "client_secret": "wrong"}, timeout=10)
    assert bad.status_code == 401 and len(listed(emu).json()) == 1


def test_a_bad_callback_url_or_no_verify_token_is_a_400(emu: RunningEmulator, recorder: Recorder) -> None:
    long_url = recorder.url + "?" + "x" * (256 - len(recorder.url) - 1)
    assert len(long_url) == 256 and subscribe(emu, long_url).status_code == 400
    assert subscribe(emu, "not a url").status_code == 400
    assert subscribe(emu, recorder.url, verify_token="").status_code == 400
    assert recorder.handshakes == [] and listed(emu).json() == []


# --------------------------------------------------------------------------- events


def test_events_for_every_change_with_strava_fields(emu: RunningEmulator, recorder: Recorder,
                                                    subscribed: Callable[[], int]) -> None:
    control(emu, "POST", "/activities", json={"start_date": "2026-11-01T08:00:00Z", "name": "before the subscription"})
    subscription_id = subscribed()
    control(emu, "POST", "/athletes", json={"athlete_id": OTHER_ATHLETE, "years": 1})

    created = control(emu, "POST", "/activities", params={"athlete_id": OTHER_ATHLETE},
                      json={"start_date": "2026-12-01T07:00:00Z", "sport_type": "Run", "name": "Easy"}).json()
    activity = created["id"]
    on = {"params": {"athlete_id": OTHER_ATHLETE}}
    control(emu, "PUT", f"/activities/{activity}", json={"name": "Long run"}, **on)
    control(emu, "PUT", f"/activities/{activity}", json={"sport_type": "TrailRun", "visibility": "only_me"}, **on)
    control(emu, "PUT", f"/activities/{activity}", json={"distance": 12345.0}, **on)  # not an event on Strava
    control(emu, "DELETE", f"/activities/{activity}", **on)
    control(emu, "POST", "/revoke", **on)
    default_one = control(emu, "POST", "/activities", json={"start_date": "2026-12-02T07:00:00Z"}).json()

    view = push_view(emu)
    events = [entry["event"] for entry in view["log"]]
    assert all(set(event) == EVENT_FIELDS and event["subscription_id"] == subscription_id for event in events)
    assert all(isinstance(event["event_time"], int) and abs(event["event_time"] - time.time()) < 60
               for event in events)
    assert [(e["object_type"], e["object_id"], e["aspect_type"], e["owner_id"], e["updates"]) for e in events] == [
        ("activity", activity, "create", OTHER_ATHLETE, {}),
        ("activity", activity, "update", OTHER_ATHLETE, {"title": "Long run"}),
        ("activity", activity, "update", OTHER_ATHLETE, {"type": "TrailRun", "private": "true"}),
        ("activity", activity, "delete", OTHER_ATHLETE, {}),
        ("athlete", OTHER_ATHLETE, "update", OTHER_ATHLETE, {"authorized": "false"}),
        ("activity", default_one["id"], "create", DEFAULT_ATHLETE, {}),
    ]
    # delivered in the background, so not necessarily in order
    assert sorted(recorder.events, key=json.dumps) == sorted(events, key=json.dumps)
    assert all(e["attempts"] == 1 and e["statuses"] == [200] and e["delivered"] and not e["lost"]
               for e in view["log"])
    assert view["totals"] == {"events": 6, "posts": 6, "delivered": 6, "failed": 0, "duplicated": 0, "lost": 0}
    # back to private=false
    control(emu, "PUT", f"/activities/{default_one['id']}", json={"private": False, "visibility": "everyone",
                                                                   "name": "x"})
    control(emu, "PUT", f"/activities/{default_one['id']}", json={"private": True})
    assert [e["event"]["updates"] for e in push_view(emu)["log"][-1:]] == [{"private": "true"}]


def test_without_a_subscription_nothing_is_sent(emu: RunningEmulator, recorder: Recorder) -> None:
    control(emu, "POST", "/activities", json={"start_date": "2026-12-01T07:00:00Z"})
    control(emu, "POST", "/revoke")
    view = push_view(emu)
    assert view["log"] == [] and view["subscription"] is None and recorder.events == []


def test_a_delivery_not_answered_200_is_tried_three_times_in_all(emu: RunningEmulator, recorder: Recorder,
                                                                 subscribed: Callable[[], int]) -> None:
    subscribed()
    recorder.statuses = [503, 500, 200, 500, 500, 500]
    control(emu, "POST", "/activities", json={"start_date": "2026-12-01T07:00:00Z"})
    push_view(emu)
    control(emu, "POST", "/activities", json={"start_date": "2026-12-01T09:00:00Z"})
    first, second = push_view(emu)["log"]
    assert (first["attempts"], first["statuses"], first["delivered"]) == (3, [503, 500, 200], True)
    assert (second["attempts"], second["statuses"], second["delivered"]) == (3, [500, 500, 500], False)
    assert len(recorder.events) == 6 and recorder.events[0] == recorder.events[2]
    assert all(b - a >= 0.05 for a, b in zip(first["sent_at"], first["sent_at"][1:], strict=False))
    assert push_view(emu)["totals"] == {"events": 2, "posts": 6, "delivered": 1, "failed": 1, "duplicated": 0,
                                              "lost": 0}


def test_an_answer_later_than_the_timeout_is_a_failed_attempt(emu: RunningEmulator, recorder: Recorder,
                                                             subscribed: Callable[[], int]) -> None:
    subscribed()
    control(emu, "PUT", "/push", json={"timeout_seconds": 0.3})
    recorder.delays = [0.6]
    started = time.monotonic()
    control(emu, "POST", "/activities", json={"start_date": "2026-12-01T07:00:00Z"})
    assert time.monotonic() - started < 0.3  # the control request does not wait for the delivery
    (entry,) = push_view(emu)["log"]
    assert entry["statuses"] == ["timeout", 200] and entry["delivered"] and len(recorder.events) == 2


def test_duplicates_and_losses(emu: RunningEmulator, recorder: Recorder, subscribed: Callable[[], int]) -> None:
    subscribed()
    control(emu, "PUT", "/push", json={"duplicate_rate": 1.0})
    created = control(emu, "POST", "/activities", json={"start_date": "2026-12-01T07:00:00Z"}).json()
    (entry,) = push_view(emu)["log"]
    assert entry["duplicated"] and entry["delivered"] and entry["attempts"] == 2 and entry["statuses"] == [200, 200]
    assert recorder.events == [entry["event"]] * 2 and entry["event"]["object_id"] == created["id"]

    control(emu, "PUT", "/push", json={"duplicate_rate": 0, "lost_rate": 1.0})
    control(emu, "DELETE", f"/activities/{created['id']}")
    view = push_view(emu)
    lost = view["log"][-1]
    assert lost["lost"] and not lost["delivered"] and lost["attempts"] == 0 and lost["event"]["aspect_type"] == "delete"
    assert len(recorder.events) == 2
    assert view["totals"] == {"events": 2, "posts": 2, "delivered": 1, "failed": 0, "duplicated": 1, "lost": 1}


def test_seeded_rates_draw_the_same_events(emu: RunningEmulator, subscribed: Callable[[], int]) -> None:
    subscribed()

    def draw() -> list[tuple[bool, bool]]:
        control(emu, "DELETE", "/push")
        control(emu, "PUT", "/push", json={"duplicate_rate": 0.3, "lost_rate": 0.3, "seed": 7,
                                           "retry_pause_seconds": 0.05})
        for day in range(1, 21):
            control(emu, "POST", "/activities", json={"start_date": f"2026-11-{day:02d}T07:00:00Z"})
        return [(e["duplicated"], e["lost"]) for e in push_view(emu)["log"]]

    drawn = draw()
    assert drawn == draw() and any(d for d, _ in drawn) and any(lost for _, lost in drawn)


def test_a_delay_makes_the_event_late(emu: RunningEmulator, recorder: Recorder, subscribed: Callable[[], int]) -> None:
    subscribed()
    control(emu, "PUT", "/push", json={"delay_seconds": 0.5})
    before = time.time()
    control(emu, "POST", "/activities", json={"start_date": "2026-12-01T07:00:00Z"})
    early = requests.get(f"{emu.url}{PUSH}", timeout=10).json()
    assert early["pending"] == 1 and recorder.events == []
    (entry,) = push_view(emu)["log"]
    assert entry["sent_at"][0] - before >= 0.5 and entry["delivered"]


def test_the_settings_are_checked_and_reset(emu: RunningEmulator, subscribed: Callable[[], int]) -> None:
    subscribed()
    for bad in ({"duplicate_rate": 1.5}, {"lost_rate": -1}, {"delay_seconds": "1"}, {"loss": 1}, {"seed": 1.5}):
        assert requests.put(f"{emu.url}{PUSH}", json=bad, timeout=10).status_code == 400
    settings = control(emu, "PUT", "/push", json={"delay_seconds": 0.1, "lost_rate": 1}).json()
    assert settings["delay_seconds"] == 0.1 and settings["lost_rate"] == 1.0 and "log" not in settings
    control(emu, "POST", "/activities", json={"start_date": "2026-12-01T07:00:00Z"})
    assert len(push_view(emu)["log"]) == 1
    assert requests.get(f"{emu.url}{PUSH}", params={"log": 0}, timeout=10).json().get("log") is None
    assert requests.get(f"{emu.url}{PUSH}", params={"since": 1}, timeout=10).json()["log"] == []
    requests.delete(f"{emu.url}/_emulator/faults", timeout=10).raise_for_status()  # the faults' reset: these too
    assert push_view(emu)["lost_rate"] == 0.0 and len(push_view(emu)["log"]) == 1
    control(emu, "DELETE", "/push")  # this one also empties the log; the subscription stays
    view = push_view(emu)
    assert view["log"] == [] and view["totals"]["events"] == 0 and view["subscription"]["id"] == FIRST_SUBSCRIPTION_ID


# --------------------------------------------------------------------------- the real receiver


def test_events_land_in_webhook_event_through_the_real_receiver(emu: RunningEmulator, schema: Any) -> None:
    from fitness_pipeline.db import transaction
    from fitness_pipeline.receiver import ReceiverSettings, create_app
    from tests.helpers import query, serve_app

    with transaction(schema) as cur:
        cur.execute("INSERT INTO athlete (name, strava_athlete_id) VALUES ('other', %s)", (OTHER_ATHLETE,))
    control(emu, "POST", "/athletes", json={"athlete_id": OTHER_ATHLETE, "years": 1})
    # the id the subscription will get is known ahead here (the emulator's first); a deployment restarts the
    # receiver with the id the create printed
    settings = ReceiverSettings(strava_verify_token=TOKEN, strava_subscription_id=FIRST_SUBSCRIPTION_ID)
    with serve_app(create_app(settings)) as url:
        assert subscribe(emu, f"{url}/strava").json() == {"id": FIRST_SUBSCRIPTION_ID}
        control(emu, "PUT", "/push", json={"duplicate_rate": 1.0})
        on = {"params": {"athlete_id": OTHER_ATHLETE}}
        activity = control(emu, "POST", "/activities", json={"start_date": "2026-12-01T07:00:00Z"}, **on).json()["id"]
        control(emu, "PUT", f"/activities/{activity}", json={"name": "Renamed"}, **on)
        control(emu, "POST", "/revoke", **on)
        control(emu, "POST", "/activities", json={"start_date": "2026-12-01T08:00:00Z"})  # nobody's here: dropped
        view = push_view(emu)
    assert all(e["delivered"] and e["statuses"] == [200, 200] for e in view["log"])
    rows = query(schema, "SELECT account_id, payload FROM webhook_event WHERE provider = 'strava' ORDER BY id")
    stored = sorted(((json.loads(payload)["aspect_type"], json.loads(payload)["updates"], account)
                     for account, payload in rows), key=json.dumps)
    expected = [("create", {}, str(OTHER_ATHLETE)), ("update", {"title": "Renamed"}, str(OTHER_ATHLETE)),
                ("update", {"authorized": "false"}, str(OTHER_ATHLETE))]
    assert [list(row) for row in stored] == sorted((list(row) for row in expected), key=json.dumps)


# --------------------------------------------------------------------------- helpers


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])

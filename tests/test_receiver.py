"""The webhook receiver (issue 12, part 1) on a real PostgreSQL: Strava's handshake and events, Google's
endpoint verification and signed notifications, and everything that must be refused without storing a row."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import pytest

from fitness_pipeline.db import transaction
from tests.helpers import query

VERIFY_TOKEN = "verify-" + "x" * 20
GOOGLE_SECRET = "endpoint-secret-" + "y" * 16
SUBSCRIPTION = 120475
ALICE = 2


@pytest.fixture
def google_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def receiver(schema: Any, google_key: Any) -> Any:
    """A TestClient of the receiver on ``fitness_db``, with athlete ``alice`` (Strava athlete 2)."""
    from cryptography.hazmat.primitives import serialization
    from starlette.testclient import TestClient

    from fitness_pipeline.receiver import ReceiverSettings, create_app

    with transaction(schema) as cur:
        cur.execute("INSERT INTO athlete (name, strava_athlete_id) VALUES ('alice', %s)", (ALICE,))
    pem = google_key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    settings = ReceiverSettings(strava_verify_token=VERIFY_TOKEN, strava_subscription_id=SUBSCRIPTION,
                                google_endpoint_secret=GOOGLE_SECRET, google_public_key_pem=pem, max_body_bytes=2048)
    return TestClient(create_app(settings))


def event(**changes: Any) -> dict[str, Any]:
    return {"aspect_type": "create", "event_time": 1765000000, "object_id": 1360128428, "object_type": "activity",
            "owner_id": ALICE, "subscription_id": SUBSCRIPTION, "updates": {}, **changes}


def stored(conn: Any) -> list[tuple[str, str]]:
    return query(conn, "SELECT provider, payload FROM webhook_event ORDER BY id")


def test_the_strava_handshake_echoes_the_challenge_only_with_our_verify_token(receiver: Any) -> None:
    ok = receiver.get("/strava", params={"hub.mode": "subscribe", "hub.challenge": "15f7d1a9", "hub.verify_token":
                                         VERIFY_TOKEN})
    assert ok.status_code == 200 and ok.json() == {"hub.challenge": "15f7d1a9"}
    for params in ({"hub.mode": "subscribe", "hub.challenge": "15f7d1a9", "hub.verify_token": "wrong"},
                   {"hub.mode": "subscribe", "hub.challenge": "15f7d1a9"},
                   {"hub.mode": "unsubscribe", "hub.challenge": "15f7d1a9", "hub.verify_token": VERIFY_TOKEN},
                   {"hub.mode": "subscribe", "hub.challenge": "c" * 256, "hub.verify_token": VERIFY_TOKEN}):
        refused = receiver.get("/strava", params=params)
        assert refused.status_code == 403 and "15f7d1a9" not in refused.text


def test_an_event_delivered_three_times_is_stored_once(receiver: Any, schema: Any) -> None:
    update = event(aspect_type="update", updates={"title": "Morning Run"})
    body = json.dumps({**update, "note": "x" * 100})  # a field Strava does not send: not stored
    answers = [receiver.post("/strava", content=body, headers={"content-type": "application/json"}) for _ in range(3)]
    assert [(a.status_code, a.json()) for a in answers] == [(200, {})] * 3
    ((provider, payload),) = stored(schema)
    assert provider == "strava" and json.loads(payload) == update
    # another event of the same activity (a later edit) is another row
    assert receiver.post("/strava", json=event(aspect_type="update", event_time=1765000060)).status_code == 200
    assert len(stored(schema)) == 2


@pytest.mark.parametrize(("body", "status"), [
    (b"{not json", 400),
    (b"[1, 2]", 400),
    (json.dumps(event(object_type="segment")).encode(), 400),
    (json.dumps(event(object_id="1360128428")).encode(), 400),
    (json.dumps(event(owner_id=True)).encode(), 400),
    (json.dumps(event(updates=["title"])).encode(), 400),
    (json.dumps(event(subscription_id=999)).encode(), 403),
    (json.dumps(event(name="x" * 3000)).encode(), 413),
    (b"[" * 2000, 400),  # nesting too deep for a parser: a refusal, not a crash
    (json.dumps(event()).encode("utf-16"), 400),
])
def test_what_is_not_our_strava_event_is_refused_and_not_stored(receiver: Any, schema: Any, body: bytes,
                                                                status: int) -> None:
    assert receiver.post("/strava", content=body).status_code == status
    assert stored(schema) == []


def test_an_event_of_an_athlete_nobody_here_authorized_is_answered_but_not_stored(receiver: Any, schema: Any) -> None:
    answer = receiver.post("/strava", json=event(owner_id=77))
    # Strava would retry anything but 200; the answer is the same as for a stored event: it tells nothing
    assert answer.status_code == 200 and answer.json() == {}
    assert stored(schema) == []
    # the default athlete's Strava id is known from the activities we hold of theirs
    with transaction(schema) as cur:
        cur.execute("INSERT INTO strava_activity (id, owner, start_date, raw) VALUES (5, 77, now(), '{}')")
    assert receiver.post("/strava", json=event(owner_id=77)).status_code == 200
    assert len(stored(schema)) == 1


def test_a_chunked_body_over_the_limit_is_refused_as_it_streams(receiver: Any, schema: Any) -> None:
    def chunks() -> Any:  # no Content-Length: the limit holds on what arrives
        for _ in range(10):
            yield b" " * 1000
    assert receiver.post("/strava", content=chunks()).status_code == 413
    assert stored(schema) == []


def test_a_revocation_event_is_stored(receiver: Any, schema: Any) -> None:
    revoked = event(object_type="athlete", object_id=ALICE, aspect_type="update", updates={"authorized": "false"})
    assert receiver.post("/strava", json=revoked).status_code == 200
    assert json.loads(stored(schema)[0][1])["updates"] == {"authorized": "false"}


def sign(key: Any, body: bytes) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()


def test_the_google_endpoint_is_verified_only_with_our_secret(receiver: Any) -> None:
    body = json.dumps({"type": "verification"})
    assert receiver.post("/google", content=body, headers={"Authorization": f"Bearer {GOOGLE_SECRET}"}).status_code \
        == 201
    assert receiver.post("/google", content=body).status_code == 401
    assert receiver.post("/google", content=body, headers={"Authorization": "Bearer guess"}).status_code == 401


def notification(user: str = "108527364915620845633", data_type: str = "weight", operation: str = "UPSERT",
                 **changes: Any) -> dict[str, Any]:
    """One notification object as Google documents it (the body is a JSON array of 1 to 99 of them)."""
    return {"data": {"version": "1", "clientProvidedSubscriptionName": "fitness-sync", "healthUserId": user,
                     "operation": operation, "dataType": data_type, "intervals": [{
                         "physicalTimeInterval": {"startTime": "2026-03-08T01:29:00Z",
                                                  "endTime": "2026-03-08T01:34:00Z"},
                         "civilDateTimeInterval": {
                             "startDateTime": {"date": {"year": 2026, "month": 3, "day": 7}, "time": {"hours": 17,
                                                                                                     "minutes": 29}},
                             "endDateTime": {"date": {"year": 2026, "month": 3, "day": 7}, "time": {"hours": 17,
                                                                                                   "minutes": 34}}}}],
                     **changes}}


def google_rows(conn: Any) -> list[tuple[str, str, str, str]]:
    return query(conn, "SELECT provider, payload, account_id, dedup_key FROM webhook_event ORDER BY id")


def test_the_google_endpoint_accepts_the_exact_secret_google_was_given(schema: Any) -> None:
    """The secret a subscriber is created with is sent as the whole Authorization header (``Bearer <random>``)."""
    from starlette.testclient import TestClient

    from fitness_pipeline.receiver import ReceiverSettings, create_app

    client = TestClient(create_app(ReceiverSettings(google_endpoint_secret="Bearer " + GOOGLE_SECRET)))
    body = json.dumps({"type": "verification"})
    assert client.post("/google", content=body, headers={"Authorization": "Bearer " + GOOGLE_SECRET}).status_code \
        == 201
    for headers in ({}, {"Authorization": GOOGLE_SECRET}, {"Authorization": "Basic " + GOOGLE_SECRET}):
        assert client.post("/google", content=body, headers=headers).status_code == 401


@pytest.mark.parametrize("header", ["X-HEALTHAPI-SIGNATURE", "GOOGLE-HEALTH-API-SIGNATURE"])
def test_a_signed_google_notification_is_stored_once_per_notification(
        receiver: Any, schema: Any, google_key: Any, header: str) -> None:
    from fitness_pipeline.receiver import google_dedup_key

    weight = notification()
    body = json.dumps([weight]).encode()
    for _ in range(2):  # Google delivers a body again
        answer = receiver.post("/google", content=body, headers={header: sign(google_key, body)})
        assert answer.status_code == 200
    ((provider, payload, account, key),) = google_rows(schema)
    assert (provider, json.loads(payload), account) == ("google", weight, "108527364915620845633")
    assert key == google_dedup_key(weight) and key.startswith("google:") and len(key) == 7 + 64
    # the same notification in another body (with other key order and spacing) is the same notification
    again = json.dumps([notification(data_type="body-fat"), {"data": dict(reversed(weight["data"].items()))}],
                       indent=1).encode()
    assert receiver.post("/google", content=again, headers={header: sign(google_key, again)}).status_code == 200
    assert [json.loads(row[1])["data"]["dataType"] for row in google_rows(schema)] == ["weight", "body-fat"]


def test_a_notification_sent_again_after_the_first_was_applied_is_a_later_change_and_kept(
        receiver: Any, schema: Any, google_key: Any) -> None:
    """A Google notification has no id: the same one comes again when the same meal is edited again. It is one
    delivery while the first waits; once that was applied, it is news."""
    body = json.dumps([notification(data_type="nutrition-log")]).encode()
    headers = {"X-HEALTHAPI-SIGNATURE": sign(google_key, body)}
    assert receiver.post("/google", content=body, headers=headers).status_code == 200
    assert receiver.post("/google", content=body, headers=headers).status_code == 200
    assert len(google_rows(schema)) == 1
    with transaction(schema) as cur:
        cur.execute("UPDATE webhook_event SET processed_at = now()")
    assert receiver.post("/google", content=body, headers=headers).status_code == 200
    assert query(schema, "SELECT count(*), count(*) FILTER (WHERE processed_at IS NULL) FROM webhook_event") == [
        (2, 1)]


def test_the_unique_dedup_key_of_earlier_versions_is_dropped_once(schema: Any) -> None:
    from fitness_pipeline.ddl import ensure_schema

    with transaction(schema) as cur:  # as the version before made it
        cur.execute("ALTER TABLE webhook_event ADD CONSTRAINT webhook_event_dedup_key_key UNIQUE (dedup_key)")
    changes = ensure_schema(schema)
    assert "webhook_event: constraint webhook_event_dedup_key_key dropped" in changes.altered_tables
    assert query(schema, "SELECT count(*) FROM pg_constraint WHERE conname = 'webhook_event_dedup_key_key'") == [(0,)]
    assert query(schema, "SELECT indexdef LIKE '%%WHERE (processed_at IS NULL)%%' FROM pg_indexes "
                         "WHERE indexname = 'uq_webhook_event_pending_dedup_key'") == [(True,)]
    assert not ensure_schema(schema).altered_tables  # idempotent


def test_one_body_of_two_users_is_two_rows_with_their_account_ids(receiver: Any, schema: Any,
                                                                   google_key: Any) -> None:
    body = json.dumps([notification("111", "weight"), notification("222", "nutrition-log", "DELETE")]).encode()
    assert receiver.post("/google", content=body, headers={"X-HEALTHAPI-SIGNATURE": sign(google_key, body)}) \
        .status_code == 200
    rows = google_rows(schema)
    assert [(r[0], r[2], json.loads(r[1])["data"]["operation"]) for r in rows] == [
        ("google", "111", "UPSERT"), ("google", "222", "DELETE")]


def test_a_forged_or_unsigned_google_notification_is_refused_and_not_stored(
        receiver: Any, schema: Any, google_key: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    forger = ec.generate_private_key(ec.SECP256R1())
    body = json.dumps([notification("1")]).encode()
    signed_other = json.dumps([notification("2")]).encode()
    for headers in ({}, {"X-HEALTHAPI-SIGNATURE": sign(forger, body)},
                    {"GOOGLE-HEALTH-API-SIGNATURE": sign(forger, body)}, {"X-HEALTHAPI-SIGNATURE": "not base64!"},
                    {"X-HEALTHAPI-SIGNATURE": ""}, {"X-HEALTHAPI-SIGNATURE": sign(google_key, signed_other)},
                    {"Authorization": f"Bearer {GOOGLE_SECRET}"}):  # the endpoint secret is no signature
        assert receiver.post("/google", content=body, headers=headers).status_code == 401
    assert google_rows(schema) == []


def malformed_bodies() -> list[Any]:
    weight = notification()
    return [
        {"healthUserId": "1", "dataTypes": ["weight"]},  # an object, not an array
        [],
        [weight] * 100,
        [weight, "x"],
        [{"data": "x"}],
        [{"weight": weight["data"]}],
        [notification(healthUserId=None)],
        [notification(healthUserId="")],
        [notification(healthUserId=108527364915620845633)],
        [notification(dataType=["weight"])],
        [notification(operation="INSERT")],
        [notification(intervals={"physicalTimeInterval": {}})],
        [{"data": {k: v for k, v in weight["data"].items() if k != "intervals"}}],
    ]


@pytest.mark.parametrize("message", malformed_bodies())
def test_a_signed_body_not_of_googles_shape_is_refused_and_not_stored(
        receiver: Any, schema: Any, google_key: Any, message: Any) -> None:
    body = json.dumps(message).encode()
    answer = receiver.post("/google", content=body, headers={"X-HEALTHAPI-SIGNATURE": sign(google_key, body)})
    assert answer.status_code == (413 if len(body) > 2048 else 400)
    assert google_rows(schema) == []


def test_google_bodies_over_the_limit_or_not_json_are_refused(receiver: Any, schema: Any, google_key: Any) -> None:
    big = json.dumps([notification(str(n)) for n in range(8)]).encode()
    assert len(big) > 2048
    assert receiver.post("/google", content=big, headers={"X-HEALTHAPI-SIGNATURE": sign(google_key, big)}) \
        .status_code == 413
    for body in (b"[{not json", json.dumps([notification()]).encode("utf-16")):
        assert receiver.post("/google", content=body, headers={"X-HEALTHAPI-SIGNATURE": sign(google_key, body)}) \
            .status_code == 400
    assert google_rows(schema) == []


def test_with_the_database_down_the_answer_is_a_quick_503_and_nothing_leaks(
        schema: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from starlette.testclient import TestClient

    from fitness_pipeline.receiver import ReceiverSettings, create_app

    monkeypatch.setenv("AIRFLOW_CONN_UNREACHABLE_DB", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 9, "login": "u", "password": "p-secret",
         "schema": "fitness"}))
    caplog.set_level(logging.DEBUG)
    client = TestClient(create_app(ReceiverSettings(strava_verify_token=VERIFY_TOKEN,
                                                    strava_subscription_id=SUBSCRIPTION,
                                                    db_conn_id="unreachable_db")))
    assert client.get("/strava", params={"hub.mode": "subscribe", "hub.challenge": "c1",
                                         "hub.verify_token": VERIFY_TOKEN}).status_code == 200  # needs no database
    started = time.monotonic()
    answer = client.post("/strava", json=event())
    assert answer.status_code == 503 and time.monotonic() - started < 2
    health = client.get("/health")  # a container's health check says why
    assert health.status_code == 503 and "cannot be reached" in health.json()["status"]
    logged = caplog.text
    assert "p-secret" not in logged and VERIFY_TOKEN not in logged and str(ALICE) not in answer.text
    assert "p-secret" not in health.text


def test_health_is_ok_while_the_database_can_be_reached(receiver: Any) -> None:
    assert receiver.get("/health").json() == {"status": "ok"}


def test_the_receiver_serves_real_http_with_uvicorn(schema: Any, receiver: Any) -> None:
    """The same app behind uvicorn on loopback, as it is deployed (``uvicorn --factory ...:create_app``)."""
    import socket
    import threading

    import requests
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(receiver.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/strava"
        handshake = requests.get(url, params={"hub.mode": "subscribe", "hub.challenge": "abc",
                                              "hub.verify_token": VERIFY_TOKEN}, timeout=5)
        assert handshake.json() == {"hub.challenge": "abc"}
        started = time.monotonic()
        assert requests.post(url, json=event(), timeout=5).json() == {}
        assert time.monotonic() - started < 2
        assert len(stored(schema)) == 1
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_purge_deletes_the_events_of_the_athlete(receiver: Any, schema: Any) -> None:
    from fitness_pipeline import athletes

    assert receiver.post("/strava", json=event()).status_code == 200
    with transaction(schema) as cur:
        cur.execute("INSERT INTO strava_activity (id, owner, start_date, raw) VALUES (5, 77, now(), '{}')")
    assert receiver.post("/strava", json=event(owner_id=77)).status_code == 200
    assert len(stored(schema)) == 2
    with transaction(schema) as cur:
        athletes.purge(cur, athletes.find(cur, "alice"))
    assert query(schema, "SELECT account_id FROM webhook_event") == [("77",)]


def test_a_google_body_holds_1_to_99_notifications() -> None:
    from fitness_pipeline.receiver import Refused, google_notifications

    assert len(google_notifications([notification()] * 99)) == 99
    for count in (0, 100):
        with pytest.raises(Refused) as refused:
            google_notifications([notification()] * count)
        assert refused.value.status == 400


def test_pooled_connections_are_reused_and_one_the_server_dropped_is_replaced(schema: Any) -> None:
    from fitness_pipeline.db import connect
    from fitness_pipeline.receiver import ConnectionPool

    opened: list[Any] = []

    def opening() -> Any:
        opened.append(connect())
        return opened[-1]

    pool = ConnectionPool(opening)
    for _ in range(3):
        with pool.transaction() as cur:
            cur.execute("SELECT 1")
    assert len(opened) == 1  # one connection served the three
    with pool.transaction() as first, pool.transaction() as second:  # two at once: two connections, both kept
        first.execute("SELECT 1")
        second.execute("SELECT 1")
    assert len(opened) == 2
    with schema.cursor() as cur:  # the server ends them (a restart)
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                    "AND datname = current_database() AND backend_type = 'client backend'")
    schema.commit()
    with pool.transaction() as cur:  # one taken from the pool, found dead: a new one, and the other dead one goes
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    assert len(opened) == 3
    with pool.transaction() as cur:  # the new one was kept
        cur.execute("SELECT 1")
    assert len(opened) == 3
    with pytest.raises(ZeroDivisionError), pool.transaction() as cur:  # an error of the caller's: not retried
        cur.execute("SELECT 1")
        raise ZeroDivisionError
    assert len(opened) == 3

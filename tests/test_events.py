"""Applying stored webhook events (issue 12): an upload, a rename and a deletion in the emulator reach the
tables through the receiver and ``tasks.events.apply_pending``, one detail read per created or updated
activity, each event applied once however often it was delivered; what cannot be applied is quarantined
without stopping the others."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import requests

from fitness_pipeline.db import transaction
from tests.helpers import query

SUBSCRIPTION = 7001


@pytest.fixture
def receiver(schema: Any) -> Any:
    from starlette.testclient import TestClient

    from fitness_pipeline.receiver import ReceiverSettings, create_app

    return TestClient(create_app(ReceiverSettings(strava_verify_token="t" * 24, strava_subscription_id=SUBSCRIPTION)))


def push(receiver: Any, owner: int, object_id: int, aspect: str, updates: dict[str, Any] | None = None,
         object_type: str = "activity", at: int = 1765000000) -> None:
    """What Strava POSTs to the callback after a change."""
    answer = receiver.post("/strava", json={
        "aspect_type": aspect, "event_time": at, "object_id": object_id, "object_type": object_type,
        "owner_id": owner, "subscription_id": SUBSCRIPTION, "updates": updates or {}})
    assert answer.status_code == 200, answer.text


def default_strava_athlete(schema: Any, emulator: Any) -> int:
    """The emulator's default Strava athlete, known as our default athlete (as the first poll makes it known)."""
    owner = int(emulator.state.strava.settings.athlete_id)
    with transaction(schema) as cur:
        cur.execute("UPDATE athlete SET strava_athlete_id = %s WHERE id = 1", (owner,))
    return owner


def strava_athlete_alice(schema: Any, emulator: Any) -> Any:
    """Athlete alice, Strava athlete 2 of the emulator, authorized (her tokens in the store)."""
    from fitness_pipeline import athletes
    from fitness_pipeline.tokens import PostgresTokenStore, TokenSet, token_key

    with transaction(schema) as cur:
        alice = athletes.upsert(cur, "alice", strava_athlete_id=2)
    created = requests.post(f"{emulator.url}/_emulator/strava/athletes", json={"athlete_id": 2}, timeout=10)
    PostgresTokenStore("fitness_db").store_authorized(token_key("strava", "strava_default", alice.id),
                                                      TokenSet(None, created.json()["refresh_token"], None))
    return alice


def test_an_upload_a_rename_and_a_deletion_reach_the_table_once_each(schema: Any, all_connections: Any,
                                                                     receiver: Any) -> None:
    from fitness_pipeline.tasks.events import apply_pending

    emulator = all_connections
    owner = default_strava_athlete(schema, emulator)
    strava_athlete_alice(schema, emulator)
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(microsecond=0)
    upload = requests.post(f"{emulator.url}/_emulator/strava/activities", timeout=10,
                           json={"start_date": start.isoformat(), "name": "Lunch Run", "sport_type": "Run"})
    upload.raise_for_status()
    activity_id = upload.json()["id"]
    emulator.reset_stats()

    push(receiver, owner, activity_id, "create")
    assert apply_pending().upserted == 1
    assert query(schema, "SELECT name, athlete_id, deleted_at FROM strava_activity WHERE id = %s", (activity_id,)) \
        == [("Lunch Run", 1, None)]

    requests.put(f"{emulator.url}/_emulator/strava/activities/{activity_id}", json={"name": "Easy Run"},
                 timeout=10).raise_for_status()
    for _ in range(3):  # Strava delivers an event up to three times
        push(receiver, owner, activity_id, "update", {"title": "Easy Run"}, at=1765000060)
    assert apply_pending().upserted == 1
    assert query(schema, "SELECT name FROM strava_activity WHERE id = %s", (activity_id,)) == [("Easy Run",)]
    assert apply_pending().upserted == 0  # nothing pending: nothing read again

    # a forged deletion (the activity is still there): Strava is asked, the row stays
    push(receiver, owner, activity_id, "delete", at=1765000090)
    assert apply_pending().deleted == 0
    assert query(schema, "SELECT deleted_at FROM strava_activity WHERE id = %s", (activity_id,)) == [(None,)]
    requests.delete(f"{emulator.url}/_emulator/strava/activities/{activity_id}", timeout=10).raise_for_status()
    push(receiver, owner, activity_id, "delete", at=1765000120)
    assert apply_pending().deleted == 1
    assert query(schema, "SELECT deleted_at IS NOT NULL FROM strava_activity WHERE id = %s", (activity_id,)) == [
        (True,)]
    # one detail read per event applied, whatever its aspect (an event is not trusted)
    assert emulator.stats()["requests"].get("GET /api/v3/activities/{activity_id}") == 4

    # a revocation that did not happen (late or forged): alice's token still refreshes, she stays active
    push(receiver, 2, 2, "update", {"authorized": "false"}, object_type="athlete")
    assert apply_pending().deauthorized == 0
    assert query(schema, "SELECT active FROM athlete WHERE name = 'alice'") == [(True,)]
    # alice really revokes the app: confirmed by a refused refresh, she is inactive with what to do
    requests.post(f"{emulator.url}/_emulator/strava/revoke", params={"athlete_id": 2}, timeout=10).raise_for_status()
    push(receiver, 2, 2, "update", {"authorized": "false"}, object_type="athlete", at=1765000300)
    assert apply_pending().deauthorized == 1
    (active, reason), = query(schema, "SELECT active, inactive_reason FROM athlete WHERE name = 'alice'")
    assert not active and "--athlete" in reason
    assert query(schema, "SELECT count(*) FROM webhook_event WHERE processed_at IS NULL") == [(0,)]


def test_with_purge_on_revoke_a_revoked_athlete_loses_their_strava_data_and_nothing_else(
        schema: Any, all_connections: Any, receiver: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fitness_pipeline.tasks.events import apply_pending
    from fitness_pipeline.tokens import PostgresTokenStore, TokenSet, token_key
    from tests.test_athletes import digest

    emulator = all_connections
    owner = default_strava_athlete(schema, emulator)
    alice = strava_athlete_alice(schema, emulator)
    store = PostgresTokenStore("fitness_db")
    store.store_authorized(token_key("fitbit", "fitbit_default", alice.id), TokenSet(None, "google-refresh", None))
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(microsecond=0)
    for athlete_id, owner_id in ((2, 2), (None, owner)):  # one activity each, with detail and laps
        upload = requests.post(f"{emulator.url}/_emulator/strava/activities", timeout=10,
                               params={"athlete_id": athlete_id} if athlete_id else None,
                               json={"start_date": start.isoformat(), "sport_type": "Run", "distance": 4000.0})
        push(receiver, owner_id, upload.json()["id"], "create")
    with transaction(schema) as cur:  # and a weigh-in of alice's (Google data: not Strava's to delete)
        cur.execute("INSERT INTO fitbit_weight (id, weight, record_date, measured_at, data_point_name, raw, athlete_id)"
                    " VALUES (1, 60, '2026-12-01', '2026-12-01 07:00+00', 'w/1', '{}', %s)", (alice.id,))
    assert apply_pending().upserted == 2
    assert query(schema, "SELECT count(*) FROM strava_lap WHERE athlete_id = %s", (alice.id,)) == [(4,)]
    default_before = {table: digest(schema, f"(SELECT * FROM {table} WHERE athlete_id = 1) t")
                      for table in ("strava_activity", "strava_activity_detail", "strava_lap", "strava_gear")}

    monkeypatch.setenv("FITNESS_STRAVA_PURGE_ON_REVOKE", "true")
    requests.post(f"{emulator.url}/_emulator/strava/revoke", params={"athlete_id": 2}, timeout=10).raise_for_status()
    push(receiver, 2, 2, "update", {"authorized": "false"}, object_type="athlete", at=1765000300)
    assert apply_pending().deauthorized == 1
    for table in ("strava_activity", "strava_activity_detail", "strava_lap", "strava_gear"):
        assert query(schema, f"SELECT count(*) FROM {table} WHERE athlete_id = %s", (alice.id,)) == [(0,)], table
    assert query(schema, "SELECT token_key FROM oauth_token WHERE athlete_id = %s", (alice.id,)) == [
        ("fitbit:fitbit_default:athlete-2",)]
    assert query(schema, "SELECT count(*) FROM fitbit_weight WHERE athlete_id = %s", (alice.id,)) == [(1,)]
    assert query(schema, "SELECT count(*) FROM webhook_event WHERE provider = 'strava' AND account_id = '2'") == [
        (0,)]
    (active, strava_id, reason), = query(schema, "SELECT active, strava_athlete_id, inactive_reason FROM athlete "
                                                 "WHERE id = %s", (alice.id,))
    assert not active and strava_id is None and "Strava data was deleted" in reason
    assert {table: digest(schema, f"(SELECT * FROM {table} WHERE athlete_id = 1) t")
            for table in default_before} == default_before


def test_an_event_the_athlete_s_revocation_makes_impossible_does_not_block_the_revocation_behind_it(
        schema: Any, all_connections: Any, receiver: Any) -> None:
    """Alice uploads, then revokes the app before the events are applied: reading the upload is refused for
    good. That event is quarantined with the reason; the revocation behind it is applied."""
    from fitness_pipeline.tasks.events import apply_pending

    emulator = all_connections
    default_strava_athlete(schema, emulator)
    alice = strava_athlete_alice(schema, emulator)
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(microsecond=0)
    upload = requests.post(f"{emulator.url}/_emulator/strava/activities", params={"athlete_id": 2}, timeout=10,
                           json={"start_date": start.isoformat(), "sport_type": "Run"}).json()
    push(receiver, 2, upload["id"], "create")
    requests.post(f"{emulator.url}/_emulator/strava/revoke", params={"athlete_id": 2}, timeout=10).raise_for_status()
    push(receiver, 2, 2, "update", {"authorized": "false"}, object_type="athlete", at=1765000300)

    applied = apply_pending()
    assert (applied.upserted, applied.quarantined, applied.deauthorized) == (0, 1, 1)
    assert query(schema, "SELECT active FROM athlete WHERE id = %s", (alice.id,)) == [(False,)]
    assert query(schema, "SELECT count(*) FROM webhook_event WHERE processed_at IS NULL") == [(0,)]
    (reason,) = [r for (r,) in query(schema, "SELECT reason FROM quarantine WHERE source = 'webhook_event'")]
    assert "strava" in reason.lower()


def test_a_detail_the_transform_refuses_keeps_the_activity_s_update(schema: Any, all_connections: Any,
                                                                    receiver: Any) -> None:
    from fitness_pipeline.tasks.events import apply_pending

    emulator = all_connections
    owner = default_strava_athlete(schema, emulator)
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(microsecond=0)
    upload = requests.post(f"{emulator.url}/_emulator/strava/activities", timeout=10, json={
        "start_date": start.isoformat(), "sport_type": "Run", "name": "Long Run", "description": "x" * 100_001}).json()
    push(receiver, owner, upload["id"], "create")
    applied = apply_pending()
    assert (applied.upserted, applied.quarantined) == (1, 0)
    assert query(schema, "SELECT name FROM strava_activity WHERE id = %s", (upload["id"],)) == [("Long Run",)]
    assert query(schema, "SELECT source, reason FROM quarantine") == [
        ("strava_activity_detail", "description must be at most 100,000 characters long")]


def test_an_upload_and_its_rename_waiting_together_cost_one_read(schema: Any, all_connections: Any,
                                                                   receiver: Any) -> None:
    from fitness_pipeline.tasks.events import apply_pending

    emulator = all_connections
    owner = default_strava_athlete(schema, emulator)
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(microsecond=0)
    upload = requests.post(f"{emulator.url}/_emulator/strava/activities", timeout=10,
                           json={"start_date": start.isoformat(), "name": "Afternoon Run", "sport_type": "Run"})
    activity_id = upload.json()["id"]
    requests.put(f"{emulator.url}/_emulator/strava/activities/{activity_id}", json={"name": "Intervals"},
                 timeout=10).raise_for_status()
    push(receiver, owner, activity_id, "create")
    push(receiver, owner, activity_id, "update", {"title": "Intervals"}, at=1765000030)
    emulator.reset_stats()

    applied = apply_pending()
    assert (applied.upserted, applied.superseded) == (1, 1)
    assert emulator.stats()["requests"].get("GET /api/v3/activities/{activity_id}") == 1
    assert query(schema, "SELECT name FROM strava_activity WHERE id = %s", (activity_id,)) == [("Intervals",)]
    assert query(schema, "SELECT count(*) FROM webhook_event WHERE processed_at IS NULL") == [(0,)]


def test_an_event_that_cannot_be_applied_is_quarantined_and_the_others_go_on(schema: Any, all_connections: Any,
                                                                             receiver: Any) -> None:
    from fitness_pipeline.tasks.events import apply_pending

    emulator = all_connections
    owner = default_strava_athlete(schema, emulator)
    with transaction(schema) as cur:
        for key, payload in (("k1", json.dumps({"object_type": "activity", "aspect_type": "create",
                                                 "object_id": 5, "owner_id": 999})),  # not our athlete
                             ("k2", json.dumps(["not", "an", "event"])),
                             ("k3", json.dumps({"healthUserId": "1"}))):  # a Google notification of nothing
            cur.execute("INSERT INTO webhook_event (provider, dedup_key, payload) VALUES (%s, %s, %s)",
                        ("google" if key == "k3" else "strava", key, payload))
    (activity,) = emulator.state.strava.find_activities(lambda a: True)[-1:]
    push(receiver, owner, activity["id"], "create")

    applied = apply_pending()
    assert (applied.upserted, applied.quarantined) == (1, 3)
    reasons = dict(query(schema, "SELECT record_key, reason FROM quarantine WHERE source = 'webhook_event'"))
    assert any("not one of ours" in reason for reason in reasons.values())
    assert any("malformed event" in reason for reason in reasons.values())
    assert any("malformed notification" in reason for reason in reasons.values())
    assert query(schema, "SELECT provider FROM webhook_event WHERE processed_at IS NULL") == []
    assert query(schema, "SELECT count(*) FROM strava_activity WHERE id = %s", (activity["id"],)) == [(1,)]


def test_the_trigger_fires_once_per_new_pending_event(schema: Any) -> None:
    import asyncio
    import importlib

    from fitness_pipeline.triggers import PendingWebhookEventsTrigger

    trigger = PendingWebhookEventsTrigger(poll_interval=0.05)
    path, kwargs = trigger.serialize()  # what the triggerer stores and builds it again from
    module, _, name = path.rpartition(".")
    assert isinstance(getattr(importlib.import_module(module), name)(**kwargs), PendingWebhookEventsTrigger)

    def add(key: str, processed: bool = False) -> None:
        with transaction(schema) as cur:
            cur.execute("INSERT INTO webhook_event (provider, dedup_key, payload, processed_at) VALUES "
                        "('strava', %s, '{}', CASE WHEN %s THEN now() END)", (key, processed))

    async def fired(after: list[str], wait: float = 0.5) -> list[int]:
        """The events the trigger yields within ``wait`` seconds, with ``after`` added once it runs."""
        found: list[int] = []
        stream = trigger.run()

        async def collect() -> None:
            async for event in stream:
                found.append(event.payload["newest_pending_event"])

        task = asyncio.ensure_future(collect())
        await asyncio.sleep(0.2)
        for key in after:
            add(key)
        await asyncio.sleep(wait)
        task.cancel()
        return found

    add("done", processed=True)  # applied already: nothing to fire for
    assert run_isolated(fired([])) == []
    add("first")
    (first,) = run_isolated(fired([]))
    # a trigger started anew (the triggerer restarted) fires for what waits, then for each newer event it sees:
    # a burst seen in one poll is one asset event
    again = run_isolated(fired(["second", "third"]))
    assert again[0] == first and again[-1] == first + 2 and again == sorted(set(again)), again


@pytest.mark.usefixtures("airflow_db")
def test_the_events_dag_applies_what_waits(schema: Any, all_connections: Any, receiver: Any) -> None:
    from airflow.models import DagBag

    emulator = all_connections
    owner = default_strava_athlete(schema, emulator)
    (activity,) = emulator.state.strava.find_activities(lambda a: True)[-1:]
    push(receiver, owner, activity["id"], "create")

    bag = DagBag(dag_folder=str(__import__("pathlib").Path(__file__).resolve().parents[1] / "dags" /
                                "fitness_events.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("fitness_events")
    # the asset whose watcher runs our trigger, or every 15 minutes should the triggerer be down
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    asset = dag.timetable.asset_condition
    assert [type(w.trigger).__name__ for w in asset.watchers] == ["PendingWebhookEventsTrigger"]
    run = dag.test()
    assert "success" in str(run.state).lower()
    assert query(schema, "SELECT count(*) FROM strava_activity WHERE id = %s", (activity["id"],)) == [(1,)]
    assert query(schema, "SELECT count(*) FROM webhook_event WHERE processed_at IS NULL") == [(0,)]


def test_an_api_error_gives_the_claims_back_and_the_next_try_applies_them(schema: Any, all_connections: Any,
                                                                          receiver: Any) -> None:
    from fitness_pipeline.errors import RetriableApiError
    from fitness_pipeline.hooks.strava import StravaHook
    from fitness_pipeline.tasks.events import apply_pending

    emulator = all_connections
    owner = default_strava_athlete(schema, emulator)
    for activity in emulator.state.strava.find_activities(lambda a: True)[-2:]:
        push(receiver, owner, activity["id"], "create")

    class Failing(StravaHook):
        def get_activity(self, activity_id: int) -> Any:
            raise RetriableApiError("Strava answered 502", status=502)

    with pytest.raises(RetriableApiError):
        apply_pending(hook_for=lambda athlete_id: Failing(athlete_id=athlete_id))
    # nothing applied, every claim given back: the retry takes them at once
    assert query(schema, "SELECT count(*) FROM webhook_event "
                         "WHERE claimed_at IS NOT NULL OR processed_at IS NOT NULL") == [(0,)]
    assert apply_pending().upserted == 2


def test_a_spent_budget_keeps_the_claims_until_its_reset(schema: Any, all_connections: Any,
                                                        receiver: Any) -> None:
    """The events wait for the budget's reset claimed: the trigger does not start a run a minute for them (the
    rescheduled try takes them at the reset)."""
    from fitness_pipeline.errors import RateLimitError
    from fitness_pipeline.hooks.strava import StravaHook
    from fitness_pipeline.tasks.events import CLAIM_EXPIRES, apply_pending
    from fitness_pipeline.triggers import pending_events

    emulator = all_connections
    owner = default_strava_athlete(schema, emulator)
    for activity in emulator.state.strava.find_activities(lambda a: True)[-2:]:
        push(receiver, owner, activity["id"], "create")
    reset = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)).replace(microsecond=0)

    class Spent(StravaHook):
        def get_activity(self, activity_id: int) -> Any:
            raise RateLimitError("the application's read limit is reached", retry_at=reset)

    with pytest.raises(RateLimitError):
        apply_pending(hook_for=lambda athlete_id: Spent(athlete_id=athlete_id))
    assert query(schema, "SELECT DISTINCT claimed_at + %s FROM webhook_event", (CLAIM_EXPIRES,)) == [(reset,)]
    assert pending_events("fitness_db")[1] is False  # nothing waits to be taken: the trigger stays quiet
    with schema.cursor() as cur:  # the reset has come
        cur.execute("UPDATE webhook_event SET claimed_at = claimed_at - interval '3 hours'")
    schema.commit()
    assert apply_pending().upserted == 2


def test_events_left_waiting_fire_the_trigger_again(schema: Any) -> None:
    import asyncio

    from fitness_pipeline.triggers import PendingWebhookEventsTrigger

    with transaction(schema) as cur:
        cur.execute("INSERT INTO webhook_event (provider, dedup_key, payload) VALUES ('strava', 'k', '{}')")

    async def fired() -> list[int]:
        found: list[int] = []

        async def collect() -> None:
            async for event in PendingWebhookEventsTrigger(poll_interval=0.05, refire_seconds=0.3).run():
                found.append(event.payload["newest_pending_event"])

        task = asyncio.ensure_future(collect())
        await asyncio.sleep(1.0)
        task.cancel()
        return found

    found = run_isolated(fired())
    assert 2 <= len(found) <= 5 and len(set(found)) == 1  # the same event, again every 0.3 s, not every poll


def run_isolated(coroutine: Any) -> Any:
    """``asyncio.run`` in a thread of its own: a test earlier in this worker (playwright's sync API) may have left
    an event loop running in the main thread, where ``asyncio.run`` refuses to start."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()

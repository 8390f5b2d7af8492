"""Event-driven sync end to end (issue 12): the emulator pushes Strava events and signed Google notifications to
the real receiver (uvicorn on loopback, subscribed with the subscription commands' functions), and
``apply_pending`` brings the tables up to date with no poll; a lost event is caught by the poll, the backstop;
a delivery repeated by the provider changes the tables once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from fitness_devtools.webhooks import Webhooks, subscribed_receiver
from tests.helpers import query


@pytest.fixture
def webhooks(schema: Any, all_connections: Any) -> Iterator[Webhooks]:
    with subscribed_receiver(all_connections.url) as subscribed:
        yield subscribed


def delivered(emulator: Any) -> None:
    """Wait until the emulator delivered (or gave up on) every event and notification."""
    for provider in ("strava", "google"):
        state = requests.get(f"{emulator.url}/_emulator/{provider}/push", params={"wait": 20, "log": 0},
                             timeout=30).json()
        assert state["pending"] == 0, (provider, state)


def recent(hours: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)).replace(microsecond=0).isoformat()


def test_an_upload_a_rename_and_a_deletion_reach_the_tables_through_the_receiver(
        all_connections: Any, webhooks: Webhooks, schema: Any) -> None:
    from fitness_pipeline.tasks.events import apply_pending

    emulator = all_connections
    strava = f"{emulator.url}/_emulator/strava"
    created = requests.post(f"{strava}/activities", timeout=10, json={
        "start_date": recent(2), "name": "Morning Run", "sport_type": "Run", "distance": 8000.0,
        "moving_time": 2600, "elapsed_time": 2700}).json()
    delivered(emulator)
    # the default athlete's Strava id is not known before a poll: the receiver took the event for an athlete
    # nobody here authorized, and did not keep it (the poll, the backstop, brings the upload)
    assert query(schema, "SELECT count(*) FROM webhook_event") == [(0,)]
    assert apply_pending().upserted == 0
    with schema.cursor() as cur:  # as the authorize command (or the first poll's owner) makes them known
        cur.execute("UPDATE athlete SET strava_athlete_id = %s WHERE id = 1", (created["athlete"]["id"],))
    schema.commit()

    requests.put(f"{strava}/activities/{created['id']}", json={"name": "Tempo Run"}, timeout=10).raise_for_status()
    delivered(emulator)
    assert apply_pending().upserted == 1
    assert query(schema, "SELECT a.name, d.lap_count, (SELECT count(*) FROM strava_lap l WHERE l.activity_id = a.id) "
                         "FROM strava_activity a JOIN strava_activity_detail d ON d.activity_id = a.id "
                         "WHERE a.id = %s", (created["id"],)) == [("Tempo Run", 8, 8)]

    requests.delete(f"{strava}/activities/{created['id']}", timeout=10).raise_for_status()
    delivered(emulator)
    assert apply_pending().deleted == 1
    assert query(schema, "SELECT deleted_at IS NOT NULL FROM strava_activity WHERE id = %s",
                 (created["id"],)) == [(True,)]
    assert query(schema, "SELECT count(*) FROM webhook_event WHERE processed_at IS NULL") == [(0,)]


def test_a_weighing_a_meal_and_a_deleted_weighing_reach_the_tables_through_the_receiver(
        all_connections: Any, webhooks: Webhooks, schema: Any) -> None:
    from fitness_pipeline.tasks.events import apply_pending

    emulator = all_connections
    google = f"{emulator.url}/_emulator/google"
    at = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).replace(microsecond=0)
    weighed = requests.post(f"{google}/weight", timeout=10, json={
        "physicalTime": at.isoformat().replace("+00:00", "Z"), "grams": 71_300, "bodyFatPercentage": 18.5})
    weighed.raise_for_status()
    requests.post(f"{google}/nutrition", timeout=10, json={
        "startTime": (at + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z"), "kcal": 640}
                  ).raise_for_status()
    delivered(emulator)
    applied = apply_pending()
    # weight and body fat come in one body of two notifications: one sync of fitbit_weight; one of fitbit_calories
    assert (applied.notified, applied.synced, applied.quarantined) == (3, 2, 0)
    assert query(schema, "SELECT weight, fat FROM fitbit_weight WHERE measured_at = %s", (at,)) == [(71.3, 18.5)]
    assert query(schema, "SELECT google_user_id IS NOT NULL FROM athlete WHERE id = 1") == [(True,)]
    eaten = query(schema, "SELECT calories FROM fitbit_calories WHERE deleted_at IS NULL AND calories >= 640")
    assert eaten, "the meal's day is in fitbit_calories"

    point_id = weighed.json()["weight"]["name"].rsplit("/", 1)[1]
    requests.delete(f"{google}/dataPoints/weight/{point_id}", timeout=10).raise_for_status()
    delivered(emulator)
    assert apply_pending().synced == 1
    assert query(schema, "SELECT deleted_at IS NOT NULL FROM fitbit_weight WHERE measured_at = %s",
                 (at,)) == [(True,)]


def test_a_lost_event_is_caught_by_the_poll_and_a_repeated_one_changes_the_tables_once(
        all_connections: Any, webhooks: Webhooks, schema: Any) -> None:
    from fitness_pipeline.tasks.events import apply_pending
    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.tasks.load import load
    from fitness_pipeline.tasks.transform import transform
    from fitness_pipeline.windows import Window

    emulator = all_connections
    strava = f"{emulator.url}/_emulator/strava"
    owner = int(emulator.state.strava.settings.athlete_id)
    with schema.cursor() as cur:
        cur.execute("UPDATE athlete SET strava_athlete_id = %s WHERE id = 1", (owner,))
    schema.commit()

    requests.put(f"{strava}/push", json={"lost_rate": 1.0}, timeout=10).raise_for_status()
    lost = requests.post(f"{strava}/activities", json={"start_date": recent(1), "sport_type": "Ride"},
                         timeout=10).json()
    delivered(emulator)
    assert apply_pending().upserted == 0
    assert query(schema, "SELECT count(*) FROM strava_activity WHERE id = %s", (lost["id"],)) == [(0,)]
    now = dt.datetime.now(dt.UTC)
    load(transform(extract("strava_activity", "backstop", Window(now - dt.timedelta(hours=3), now))))
    assert query(schema, "SELECT count(*) FROM strava_activity WHERE id = %s", (lost["id"],)) == [(1,)]

    requests.put(f"{strava}/push", json={"lost_rate": 0.0, "duplicate_rate": 1.0}, timeout=10).raise_for_status()
    requests.put(f"{strava}/activities/{lost['id']}", json={"name": "Gravel loop"}, timeout=10).raise_for_status()
    delivered(emulator)
    posts = requests.get(f"{strava}/push", timeout=10).json()["totals"]
    assert posts["duplicated"] >= 1
    assert query(schema, "SELECT count(*) FROM webhook_event WHERE provider = 'strava' AND processed_at IS NULL"
                 ) == [(1,)]  # delivered twice, stored once
    before = query(schema, "SELECT last_time FROM strava_activity WHERE id = %s", (lost["id"],))
    assert apply_pending().upserted == 1
    assert apply_pending().upserted == 0
    after = query(schema, "SELECT name, last_time FROM strava_activity WHERE id = %s", (lost["id"],))
    assert after[0][0] == "Gravel loop" and after[0][1] > before[0][0]


def test_events_received_while_airflow_is_stopped_are_all_applied_when_it_starts(
        all_connections: Any, webhooks: Webhooks, schema: Any) -> None:
    from fitness_pipeline.tasks.events import apply_pending

    emulator = all_connections
    with schema.cursor() as cur:
        cur.execute("UPDATE athlete SET strava_athlete_id = %s WHERE id = 1",
                    (int(emulator.state.strava.settings.athlete_id),))
    schema.commit()
    uploads = [requests.post(f"{emulator.url}/_emulator/strava/activities", timeout=10, json={
        "start_date": recent(hours), "sport_type": "Run", "distance": 3000.0 + hours}).json()["id"]
        for hours in range(1, 6)]
    delivered(emulator)  # nothing applies them meanwhile: they wait in the table
    assert query(schema, "SELECT count(*) FROM webhook_event WHERE processed_at IS NULL") == [(5,)]
    assert apply_pending().upserted == 5  # the first run after Airflow is back
    assert query(schema, "SELECT count(*) FROM strava_activity WHERE id = ANY(%s)", (uploads,)) == [(5,)]


def test_fitness_sync_s_clean_up_leaves_a_webhook_event_s_batch_alone(schema: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An event's sync lands and stages a batch ``webhook-event-<id>/...``, which no fitness_sync run owns: the
    clean-up of finished batches (Airflow answers "finished or unknown" for it) must not take it mid-way."""
    from fitness_pipeline import compat, sources
    from fitness_pipeline.tasks.load import clear_finished_batches

    monkeypatch.setattr(compat, "dag_run_finished", lambda dag_id, run_id: True)
    with schema.cursor() as cur:
        for batch in ("webhook-event-5/fitbit_weight", "scheduled__2026-12-01/fitbit_weight"):
            cur.execute("INSERT INTO raw_record (batch_id, seq, payload) VALUES (%s, 0, '{}')", (batch,))
    schema.commit()
    spec = sources.get("fitbit_weight")
    assert clear_finished_batches(schema, spec, "scheduled__2026-12-06/fitbit_weight", "fitness_sync") == 1
    assert query(schema, "SELECT batch_id FROM raw_record") == [("webhook-event-5/fitbit_weight",)]

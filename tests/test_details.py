"""Detailed activities (issue 12, part 4): what ``GET /activities/{id}`` adds (description, calories, device, gear,
laps) is read for the activities that lack it, oldest first, within a share of the shared Strava budget, stored
per activity, replaced when an event reads it again, and deleted with its activity."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import requests

from fitness_emulator.strava_data import GEAR_NAMES
from fitness_pipeline.transforms.fields import RecordError
from fitness_pipeline.transforms.strava import strava_detail_rows
from tests.helpers import query

DAY = dt.timedelta(days=1)

#: Strava's published DetailedActivity example (developers.strava.com, getActivityById), cut to what matters here
STRAVA_EXAMPLE = {
    "id": 12345678987654321, "resource_state": 3, "athlete": {"id": 134815, "resource_state": 1},
    "name": "Happy Friday", "distance": 28099, "moving_time": 4207, "elapsed_time": 4410,
    "start_date": "2018-02-16T14:52:54Z", "start_date_local": "2018-02-16T06:52:54Z",
    "gear_id": "b12345678987654321", "description": "", "calories": 870.2, "device_name": "Strava iPhone App",
    "gear": {"id": "b12345678987654321", "primary": True, "name": "Tarmac", "resource_state": 2,
             "distance": 32547610},
    "laps": [{"id": 4479306946, "resource_state": 2, "name": "Lap 1",
              "activity": {"id": 1410355832, "resource_state": 1}, "athlete": {"id": 134815, "resource_state": 1},
              "elapsed_time": 1573, "moving_time": 1569, "start_date": "2018-02-16T14:52:54Z",
              "start_date_local": "2018-02-16T06:52:54Z", "distance": 8046.72, "start_index": 0, "end_index": 1570,
              "total_elevation_gain": 276, "average_speed": 5.12, "max_speed": 9.5, "average_cadence": 78.5,
              "device_watts": True, "average_watts": 237.6, "lap_index": 1, "split": 1}],
}


def test_strava_s_published_example_becomes_a_detail_its_gear_and_a_lap() -> None:
    rows = strava_detail_rows(STRAVA_EXAMPLE)
    assert rows.detail == {"activity_id": 12345678987654321, "description": "", "calories": 870.2,
                           "device_name": "Strava iPhone App", "gear_id": "b12345678987654321", "lap_count": 1}
    assert rows.gear == {"id": "b12345678987654321", "name": "Tarmac", "distance": 32547610.0, "is_primary": True}
    (lap,) = rows.laps
    assert lap["id"] == 4479306946 and lap["activity_id"] == 12345678987654321 and lap["lap_index"] == 1
    assert lap["start_date"] == dt.datetime(2018, 2, 16, 14, 52, 54, tzinfo=dt.UTC)
    assert lap["start_date_local"] == dt.datetime(2018, 2, 16, 6, 52, 54)  # the wall clock, not shifted
    assert (lap["distance"], lap["average_watts"], lap["average_heartrate"]) == (8046.72, 237.6, None)


def test_an_activity_without_gear_or_laps_has_a_detail_of_its_own() -> None:
    rows = strava_detail_rows({"id": 5, "description": "Rest day walk", "calories": None})
    assert rows.gear is None and rows.laps == []
    assert rows.detail["lap_count"] == 0 and rows.detail["description"] == "Rest day walk"


@pytest.mark.parametrize(("change", "reason"), [
    ({"laps": [{"id": 1, "distance": -5}]}, "laps[].distance must be between 0"),
    ({"laps": ["lap"]}, "laps must be a list of objects"),
    ({"gear": "b1"}, "gear must be an object"),
    ({"calories": 1e9}, "calories must be between 0 and 100,000 kcal"),
    ({"laps": [{"distance": 5}]}, "id"),
])
def test_a_detail_with_an_impossible_part_is_refused_whole_with_the_field_named(change: dict[str, Any],
                                                                                reason: str) -> None:
    with pytest.raises(RecordError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        strava_detail_rows({**STRAVA_EXAMPLE, **change})


def this_hour() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)


def load_activities(days: int = 20) -> int:
    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.tasks.load import load
    from fitness_pipeline.tasks.transform import transform
    from fitness_pipeline.windows import Window

    window = Window(this_hour() - days * DAY, this_hour())
    return load(transform(extract("strava_activity", "listing", window))).inserted


def test_details_are_read_oldest_first_within_the_budget_share_then_the_rest_later(
        schema: Any, all_connections: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fitness_pipeline.hooks import strava
    from fitness_pipeline.tasks.details import enrich, missing

    emulator = all_connections
    window_start = (int(dt.datetime.now(dt.UTC).timestamp()) // 900 + 10) * 900  # a budget window nobody used yet
    monkeypatch.setattr(strava, "rate_limit_clock", lambda: window_start + 1.0)
    listed = load_activities()
    assert listed > 10
    with schema.cursor() as cur:
        oldest = missing(cur, 1, limit=listed)
    monkeypatch.setattr(strava, "rate_limit_clock", lambda: window_start + 901.0)  # the next window
    requests.delete(f"{emulator.url}/_emulator/strava/rate-limits", timeout=10).raise_for_status()

    # 10% of the application's 100 reads per window: 10 reads
    first = enrich(1, share=0.1)
    assert first.budget_spent and first.read == first.stored == 10
    stored = [activity_id for (activity_id,) in query(
        schema, "SELECT activity_id FROM strava_activity_detail ORDER BY activity_id")]
    assert sorted(oldest[:10]) == stored  # oldest first
    assert enrich(1, share=0.1).read == 0  # the share stays spent in this window: nothing is read, nothing waits

    monkeypatch.setattr(strava, "rate_limit_clock", lambda: window_start + 1801.0)  # the window after
    requests.delete(f"{emulator.url}/_emulator/strava/rate-limits", timeout=10).raise_for_status()
    rest = enrich(1, share=1.0)
    assert not rest.budget_spent and rest.stored == listed - 10
    assert enrich(1, share=1.0).read == 0  # nothing missing: a re-run reads nothing

    # each stored detail is the emulator's, laps and gear included
    some = oldest[3]
    served = requests.get(f"{emulator.url}/api/v3/activities/{some}", timeout=10,
                          headers={"Authorization": f"Bearer {access_token()}"}).json()
    assert query(schema, "SELECT calories, device_name, gear_id, lap_count FROM strava_activity_detail "
                         "WHERE activity_id = %s", (some,)) == [
        (served["calories"], served.get("device_name"), served.get("gear_id"), len(served["laps"]))]
    assert query(schema, "SELECT id, lap_index, distance FROM strava_lap WHERE activity_id = %s ORDER BY lap_index",
                 (some,)) == [(lap["id"], lap["lap_index"], lap["distance"]) for lap in served["laps"]]
    assert query(schema, "SELECT id, name FROM strava_gear ORDER BY id") == sorted(
        (gear_id, name) for gear_id, name in GEAR_NAMES.items() if gear_id in set(query(
            schema, "SELECT gear_id FROM strava_activity_detail")) or (gear_id,) in set(query(
            schema, "SELECT gear_id FROM strava_activity_detail")))


def access_token() -> str:
    from fitness_pipeline.hooks.strava import StravaHook

    hook = StravaHook()
    try:
        return hook.access_token()
    finally:
        hook.close()


def test_laps_follow_the_activity_and_go_with_it(schema: Any, all_connections: Any, receiver: Any) -> None:
    """A shortened activity read again (for an event) loses the laps it no longer has; an activity deleted for
    good (retention, purge) takes its detail and laps with it."""
    from fitness_pipeline.tasks.details import enrich
    from fitness_pipeline.tasks.events import apply_pending
    from tests.test_events import default_strava_athlete, push

    emulator = all_connections
    owner = default_strava_athlete(schema, emulator)
    start = (this_hour() - dt.timedelta(hours=3)).isoformat()
    upload = requests.post(f"{emulator.url}/_emulator/strava/activities", timeout=10,
                           json={"start_date": start, "sport_type": "Run", "name": "Long Run", "distance": 21100.0,
                                 "moving_time": 6300, "elapsed_time": 6400})
    upload.raise_for_status()
    activity_id = upload.json()["id"]
    push(receiver, owner, activity_id, "create")
    assert apply_pending().upserted == 1
    assert query(schema, "SELECT count(*), max(lap_index) FROM strava_lap WHERE activity_id = %s",
                 (activity_id,)) == [(22, 22)]
    assert query(schema, "SELECT lap_count FROM strava_activity_detail WHERE activity_id = %s",
                 (activity_id,)) == [(22,)]
    assert enrich(1, share=1.0, retention_days=1).read == 0  # it has its detail: not read again

    requests.put(f"{emulator.url}/_emulator/strava/activities/{activity_id}", timeout=10,
                 json={"distance": 5000.0}).raise_for_status()
    push(receiver, owner, activity_id, "update", at=1765000100)
    assert apply_pending().upserted == 1
    assert query(schema, "SELECT count(*) FROM strava_lap WHERE activity_id = %s", (activity_id,)) == [(5,)]

    with schema.cursor() as cur:  # what the retention and a purge do
        cur.execute("DELETE FROM strava_activity WHERE id = %s", (activity_id,))
    schema.commit()
    assert query(schema, "SELECT (SELECT count(*) FROM strava_lap WHERE activity_id = %(id)s), "
                         "(SELECT count(*) FROM strava_activity_detail WHERE activity_id = %(id)s)",
                 {"id": activity_id}) == [(0, 0)]


def test_a_detail_the_transform_refuses_is_quarantined_once_and_not_read_again(schema: Any,
                                                                              all_connections: Any) -> None:
    from fitness_pipeline.tasks.details import enrich

    emulator = all_connections
    start = (this_hour() - dt.timedelta(hours=2)).isoformat()
    upload = requests.post(f"{emulator.url}/_emulator/strava/activities", timeout=10,
                           json={"start_date": start, "sport_type": "Ride", "description": "x" * 100_001})
    upload.raise_for_status()
    activity_id = upload.json()["id"]
    load_activities(days=1)
    first = enrich(1, share=1.0, retention_days=1)
    assert first.quarantined == 1 and first.stored == first.read - 1
    assert query(schema, "SELECT reason FROM quarantine WHERE source = 'strava_activity_detail' AND record_key = %s",
                 (str(activity_id),)) == [("description must be at most 100,000 characters long",)]
    assert enrich(1, share=1.0, retention_days=1).read == 0


@pytest.fixture
def receiver(schema: Any) -> Any:
    from starlette.testclient import TestClient

    from fitness_pipeline.receiver import ReceiverSettings, create_app
    from tests.test_events import SUBSCRIPTION

    return TestClient(create_app(ReceiverSettings(strava_verify_token="t" * 24, strava_subscription_id=SUBSCRIPTION)))


def test_an_activity_strava_refuses_to_detail_is_quarantined_and_the_others_are_read(
        schema: Any, all_connections: Any) -> None:
    from fitness_pipeline.errors import FatalApiError, RetriableApiError
    from fitness_pipeline.hooks.strava import StravaHook
    from fitness_pipeline.tasks.details import enrich, missing

    load_activities(days=5)
    with schema.cursor() as cur:
        oldest, *others = missing(cur, 1, limit=100)
    assert others

    class RefusingOne(StravaHook):
        def get_activity(self, activity_id: int) -> Any:
            if activity_id == oldest:  # Strava answers this one with a 403, say
                raise FatalApiError("Strava answered 403 Forbidden for GET /activities/<id>", status=403)
            return super().get_activity(activity_id)

    done = enrich(1, share=1.0, hook=RefusingOne())
    assert (done.quarantined, done.stored) == (1, len(others))
    assert query(schema, "SELECT reason FROM quarantine WHERE source = 'strava_activity_detail' AND record_key = %s",
                 (str(oldest),)) == [("Strava refused its detail: Strava answered 403 Forbidden for GET "
                                      "/activities/<id>",)]
    assert enrich(1, share=1.0).read == 0  # not read again; nothing else missing

    class Failing(StravaHook):
        def get_activity(self, activity_id: int) -> Any:
            raise RetriableApiError("Strava answered 502", status=502)

    load_activities(days=30)  # older activities, now missing their detail
    with schema.cursor() as cur:
        assert missing(cur, 1)
    stopped = enrich(1, share=1.0, hook=Failing())
    assert stopped.budget_spent and stopped.read == 0  # Strava failing: it stops without failing the run

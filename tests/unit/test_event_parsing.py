"""The pure parts of applying events: a Google notification's window, and which Strava events of a batch read
their activity."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from fitness_pipeline.tasks.events import EventError, Notification, latest_per_activity, notification_of, notified_syncs
from fitness_pipeline.windows import Window

UTC = dt.UTC


def google(data_type: str = "weight", **intervals: object) -> str:
    interval = intervals or {"physicalTimeInterval": {"startTime": "2026-03-08T01:29:00Z",
                                                      "endTime": "2026-03-08T01:34:00Z"}}
    return json.dumps({"data": {"version": "1", "healthUserId": "u-1", "operation": "UPSERT", "dataType": data_type,
                                "intervals": [interval]}})


def test_a_notification_s_window_covers_its_physical_interval_end_included() -> None:
    notification = notification_of(google())
    assert (notification.user, notification.data_type) == ("u-1", "weight")
    assert notification.window.start == dt.datetime(2026, 3, 8, 1, 29, tzinfo=UTC)
    assert notification.window.end == dt.datetime(2026, 3, 8, 1, 34, 1, tzinfo=UTC)  # half-open: the end's own


def test_a_civil_only_interval_covers_its_dates_in_every_time_zone() -> None:
    day = {"year": 2026, "month": 3, "day": 8}
    notification = notification_of(google("nutrition-log", civilDateTimeInterval={
        "startDateTime": {"date": day}, "endDateTime": {"date": day}}))
    assert notification.window.start == dt.datetime(2026, 3, 7, 10, tzinfo=UTC)  # 8 March at UTC+14
    assert notification.window.end == dt.datetime(2026, 3, 9, 14, 0, 1, tzinfo=UTC)  # its end at UTC-14


@pytest.mark.parametrize("payload", [
    "not json", json.dumps([1]), json.dumps({"data": {"healthUserId": "u"}}),
    json.dumps({"data": {"healthUserId": "u", "dataType": "weight", "intervals": []}}),
    json.dumps({"data": {"healthUserId": "u", "dataType": "weight", "intervals": [{"physicalTimeInterval": {}}]}}),
    json.dumps({"data": {"healthUserId": "u", "dataType": "weight",
                         "intervals": [{"physicalTimeInterval": {"startTime": "yesterday", "endTime": "now"}}]}}),
])
def test_a_malformed_notification_is_refused_with_a_reason(payload: str) -> None:
    with pytest.raises(EventError, match="malformed notification"):
        notification_of(payload)


def strava(event_id: int, object_id: int, object_type: str = "activity", owner: int = 7) -> tuple[int, str]:
    return event_id, json.dumps({"object_type": object_type, "object_id": object_id, "aspect_type": "update",
                                 "owner_id": owner, "subscription_id": 1, "event_time": 1, "updates": {}})


def test_only_the_last_event_of_an_activity_in_a_batch_reads_it() -> None:
    batch = [strava(1, 100), strava(2, 200), strava(3, 100), strava(4, 7, "athlete"), strava(5, 7, "athlete"),
             (6, "garbage"), strava(7, 200, owner=8)]
    # activity 100: event 3 reads it for both; athlete events and unreadable ones are all applied; an event naming
    # another owner (a forged one) does not stand in for activity 200's real one
    assert latest_per_activity(batch) == {2, 3, 4, 5, 6, 7}


def window(start_hour: float, hours: float) -> Notification:
    start = dt.datetime(2026, 3, 8, tzinfo=UTC) + dt.timedelta(hours=start_hour)
    return Notification("u", "weight", Window(start, start + dt.timedelta(hours=hours)))


def test_notified_windows_are_merged_only_where_they_overlap_or_nearly() -> None:
    syncs = notified_syncs([
        (1, 5, "fitbit_weight", window(0, 0.1)),
        (2, 5, "fitbit_weight", window(0.5, 0.1)),  # within the hour: one listing for both
        (3, 5, "fitbit_weight", window(-24 * 30, 0.1)),  # an edit of a month ago: a sync of its own
        (4, 5, "fitbit_calories", window(0, 24)),
        (5, 6, "fitbit_weight", window(0, 0.1)),  # another athlete
    ])
    assert [(s.athlete_id, s.source, sorted(s.event_ids)) for s in syncs] == [
        (5, "fitbit_calories", [4]), (5, "fitbit_weight", [3]), (5, "fitbit_weight", [1, 2]), (6, "fitbit_weight", [5])]
    (merged,) = [s for s in syncs if s.event_ids == [1, 2]]
    assert merged.window == Window(dt.datetime(2026, 3, 8, tzinfo=UTC), dt.datetime(2026, 3, 8, 0, 36, tzinfo=UTC))

"""The pure transforms, without a database: every trap in api-notes."""

from __future__ import annotations

import copy
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest

from fitness_pipeline.transforms.bounds import BOUNDS
from fitness_pipeline.transforms.fields import MAX_DEPTH, RecordError
from fitness_pipeline.transforms.records import CUT, quarantine_json, transform_batch
from fitness_pipeline.transforms.strava import strava_activity_row

# Shaped like Strava's documented SummaryActivity example.
ACTIVITY: dict[str, Any] = {
    "resource_state": 2,
    "athlete": {"id": 134815, "resource_state": 1},
    "name": "Happy Friday",
    "distance": 24931.4,
    "moving_time": 4500,
    "elapsed_time": 4500,
    "total_elevation_gain": 0,
    "type": "Ride",
    "sport_type": "MountainBikeRide",
    "workout_type": None,
    "id": 154504250376823,
    "external_id": "garmin_push_12345678987654321",
    "upload_id": 987654321234567891234,
    "start_date": "2018-05-02T12:15:09Z",
    "start_date_local": "2018-05-02T05:15:09Z",
    "timezone": "(GMT-08:00) America/Los_Angeles",
    "utc_offset": -25200,
    "trainer": True,
    "commute": False,
    "manual": False,
    "private": True,
    "visibility": "only_me",
    "gear_id": "b12345678987654321",
    "average_speed": 5.54,
    "max_speed": 11,
    "average_cadence": 67.1,
    "average_watts": 175.3,
    "kilojoules": 788.7,
    "has_heartrate": True,
    "average_heartrate": 140.3,
    "max_heartrate": 178,
    "device_name": "Garmin Edge 1030",
}


def activity(**changes: Any) -> dict[str, Any]:
    record = copy.deepcopy(ACTIVITY)
    for key, value in changes.items():
        if value is ...:
            record.pop(key, None)
        else:
            record[key] = value
    return record


def test_maps_seed_columns_and_types() -> None:
    row = strava_activity_row(activity())
    assert row["id"] == 154504250376823
    assert row["owner"] == 134815
    assert row["activity_type"] == "Ride"
    assert row["sport_type"] == "MountainBikeRide"
    assert row["distance"] == 24931.4
    assert row["moving_time"] == 4500 and isinstance(row["moving_time"], int)
    assert row["max_speed"] == 11.0
    assert row["utc_offset"] == -25200.0
    assert json.loads(row["raw"]) == ACTIVITY


def test_start_date_is_utc_and_local_time_is_not_shifted() -> None:
    row = strava_activity_row(activity())
    assert row["start_date"] == dt.datetime(2018, 5, 2, 12, 15, 9, tzinfo=dt.UTC)
    # Strava writes local wall-clock time with a misleading "Z": keep 05:15, naive
    assert row["start_date_local"] == dt.datetime(2018, 5, 2, 5, 15, 9)
    assert row["start_date_local"].tzinfo is None
    assert row["start_date"] - dt.timedelta(seconds=-row["utc_offset"]) == row["start_date_local"].replace(
        tzinfo=dt.UTC)


def test_upload_id_beyond_bigint_is_kept_exactly() -> None:
    row = strava_activity_row(activity())
    assert row["upload_id"] == 987654321234567891234
    assert row["upload_id"] > 2**63
    # upload_id_str wins: a JSON parser elsewhere may have rounded the number
    row = strava_activity_row(activity(upload_id=9.876543212345679e20, upload_id_str="987654321234567891234"))
    assert Decimal(row["upload_id"]) == Decimal("987654321234567891234")


def test_missing_heart_rate_and_manual_activity() -> None:
    record = activity(has_heartrate=False, average_heartrate=..., max_heartrate=..., manual=True,
                      upload_id=..., external_id=..., device_name=...)
    row = strava_activity_row(record)
    assert row["average_heartrate"] is None and row["max_heartrate"] is None
    assert row["manual"] is True and row["upload_id"] is None and row["device_name"] is None


def test_long_unicode_name_passes_whole() -> None:
    name = "Sonntagslauf am Zürichsee 🏃‍♀️ mit Ärger, Öl und 東京マラソンの練習 — ein sehr langer Titel"
    assert len(name) > 50
    assert strava_activity_row(activity(name=name))["name"] == name


def test_unknown_sport_type_passes_through() -> None:
    row = strava_activity_row(activity(type="Workout", sport_type="Padel"))
    assert (row["activity_type"], row["sport_type"]) == ("Workout", "Padel")
    row = strava_activity_row(activity(type=..., sport_type="Pickleball"))
    assert row["activity_type"] == "Pickleball"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"id": ...}, "id is missing"),
        ({"id": "abc"}, "id must be an integer"),
        ({"id": True}, "id must be an integer, got a boolean"),
        ({"start_date": ...}, "start_date is missing"),
        ({"start_date": "yesterday"}, "start_date is not an ISO 8601"),
        ({"start_date": "2018-05-02T12:15:09"}, "start_date has no time zone"),
        ({"distance": "24 km"}, "distance must be a number, got str"),
        ({"moving_time": -5}, "moving_time is out of range"),
        ({"average_heartrate": float("nan")}, "average_heartrate must be a finite number"),
        ({"name": 42}, "name must be a string"),
        ({"athlete": "me"}, "athlete must be an object"),
        ({"name": "nul\u0000byte"}, "NUL character"),
        ({"name": "lone \ud83c surrogate"}, "invalid Unicode"),
        ({"upload_id": 10**31}, "upload_id is out of range"),
    ],
)
def test_bad_records_raise_a_clear_reason(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        strava_activity_row(activity(**changes))


def test_reasons_never_quote_values() -> None:
    with pytest.raises(RecordError) as error:
        strava_activity_row(activity(distance="secret-value"))
    assert "secret-value" not in str(error.value)


def test_batch_quarantines_bad_records_and_keeps_the_rest() -> None:
    records = [activity(id=1), activity(id=2, start_date="nope"), "not an object", activity(id=3)]
    result = transform_batch(records, strava_activity_row)
    assert [row["id"] for row in result.rows] == [1, 3]
    first = result.quarantined[0]
    assert (first.record_key, first.reason) == ("2", "start_date is not an ISO 8601 date-time")
    assert result.quarantined[1].reason == "record must be a JSON object, got str"
    assert result.quarantined[1].record_key.startswith("sha256:")
    assert json.loads(result.quarantined[0].payload)["id"] == 2


@pytest.mark.parametrize("changes", [
    {"distance": 10**400},                      # float() overflows
    {"id": "9" * 5000},                         # beyond int()'s digit limit
    {"start_date": "0001-01-01T00:30:00+01:00"},  # before year 1 in UTC
    {"map": {"x": float("nan")}},               # NaN where no reader looks: jsonb refuses it
    {"name": "half an emoji \ud83c"},           # lone surrogate
])
def test_odd_values_quarantine_one_record_not_the_batch(changes: dict[str, Any]) -> None:
    result = transform_batch([activity(id=1), activity(**{"id": 2, **changes}), activity(id=3)], strava_activity_row)
    assert [row["id"] for row in result.rows] == [1, 3]
    (bad,) = result.quarantined
    bad.payload.encode("ascii")  # storable in any text column, whatever the record held
    assert bad.record_key == "2" or (changes.get("id") and bad.record_key.startswith("sha256:"))


def test_quarantine_key_is_the_primary_key_as_text() -> None:
    """So that a quarantined record counts as present (not deleted) and is released once it loads."""
    result = transform_batch([activity(id=123.0, start_date="nope")], strava_activity_row)
    assert result.quarantined[0].record_key == "123"


# --- deep nesting (issue 10, defect 2) ------------------------------------------------------------


def nested(levels: int, leaf: Any = 1) -> Any:
    """``levels`` levels of objects and arrays around ``leaf``, built without recursion."""
    value = leaf
    for level in range(levels):
        value = {"x": value} if level % 2 else [value]
    return value


def test_a_record_nested_900_levels_is_quarantined_and_the_rest_loads() -> None:
    deep = activity(id=2, map=nested(900))
    result = transform_batch([activity(id=1), deep, activity(id=3)], strava_activity_row)
    assert [row["id"] for row in result.rows] == [1, 3]
    (bad,) = result.quarantined
    assert (bad.record_key, bad.reason) == ("2", f"nested deeper than {MAX_DEPTH} levels")
    payload = json.loads(bad.payload)  # stored down to the limit, the rest cut
    assert payload["id"] == 2 and CUT in bad.payload


def test_the_nesting_limit_is_exact() -> None:
    # the record is level 1, so its "map" may nest MAX_DEPTH - 1 levels
    assert strava_activity_row(activity(map=nested(MAX_DEPTH - 1)))["raw"]
    with pytest.raises(RecordError, match=f"nested deeper than {MAX_DEPTH} levels"):
        strava_activity_row(activity(map=nested(MAX_DEPTH)))


@pytest.mark.parametrize("levels", [5_000, 100_000])
def test_deeper_than_any_recursion_is_still_one_record(levels: int) -> None:
    result = transform_batch([activity(id=1), activity(id=2, map=nested(levels, "nul\u0000")), [nested(levels)]],
                             strava_activity_row)
    assert [row["id"] for row in result.rows] == [1]
    assert [q.reason for q in result.quarantined] == [f"nested deeper than {MAX_DEPTH} levels",
                                                       "record must be a JSON object, got list"]
    assert result.quarantined[1].record_key.startswith("sha256:")  # the hash of the cut payload, stable
    assert result.quarantined[1].record_key == transform_batch([[nested(levels)]], strava_activity_row) \
        .quarantined[0].record_key


def test_nul_deep_inside_is_found_without_recursion() -> None:
    with pytest.raises(RecordError, match="NUL character"):
        strava_activity_row(activity(map=nested(MAX_DEPTH - 2, {"k\u0000": 1})))


def test_quarantine_json_never_raises() -> None:
    text = quarantine_json(nested(50_000))
    assert CUT in text and len(text) < 1_000


# --- plausibility bounds (issue 10, defect 6) -----------------------------------------------------


@pytest.mark.parametrize(("changes", "reason"), [
    ({"distance": -0.5}, "distance must be between 0 and 10,000,000 m"),
    ({"distance": 10_000_001}, "distance must be between 0 and 10,000,000 m"),
    ({"moving_time": 30 * 86400 + 1}, "moving_time must be between 0 and 2,592,000 s"),
    ({"elapsed_time": 40 * 86400}, "elapsed_time must be between 0 and 2,592,000 s"),
    ({"total_elevation_gain": -1}, "total_elevation_gain must be between 0 and 100,000 m"),
    ({"total_elevation_gain": 100_001}, "total_elevation_gain must be between 0 and 100,000 m"),
    ({"average_speed": -1.0}, "average_speed must be between 0 and 350 m/s"),
    ({"max_speed": 351}, "max_speed must be between 0 and 350 m/s"),
    ({"average_cadence": 301}, "average_cadence must be between 0 and 300 rpm"),
    ({"average_heartrate": 19.9}, "average_heartrate must be between 20 and 260 bpm"),
    ({"max_heartrate": 261}, "max_heartrate must be between 20 and 260 bpm"),
    ({"average_watts": 3_001}, "average_watts must be between 0 and 3,000 W"),
    ({"average_watts": -3}, "average_watts must be between 0 and 3,000 W"),
    ({"kilojoules": 200_001}, "kilojoules must be between 0 and 200,000 kJ"),
    ({"utc_offset": 19 * 3600}, "utc_offset must be between -64,800 and 64,800 s"),
    ({"start_date": "9999-12-31T00:00:00Z"}, "start_date must be between 2000-01-01 and 2099-12-31"),
    ({"start_date": "2100-01-01T00:00:00Z"}, "start_date must be between 2000-01-01 and 2099-12-31"),
    ({"start_date": "1999-12-31T23:59:59Z"}, "start_date must be between 2000-01-01 and 2099-12-31"),
    ({"start_date_local": "1970-01-01T00:00:00Z"}, "start_date_local must be between 2000-01-01 and 2099-12-31"),
    ({"sport_type": "R" * 101}, "sport_type must be at most 100 characters long"),
    ({"type": "R" * 101}, "type must be at most 100 characters long"),
    ({"type": ..., "sport_type": "R" * 101}, "sport_type must be at most 100 characters long"),
    ({"name": "n" * 2_001}, "name must be at most 2,000 characters long"),
    ({"name": "n" * 1_000_000}, "name must be at most 2,000 characters long"),
    ({"timezone": "t" * 201}, "timezone must be at most 200 characters long"),
    ({"external_id": "e" * 2_001}, "external_id must be at most 2,000 characters long"),
    ({"device_name": "d" * 2_001}, "device_name must be at most 2,000 characters long"),
    ({"gear_id": "g" * 101}, "gear_id must be at most 100 characters long"),
    ({"visibility": "v" * 101}, "visibility must be at most 100 characters long"),
])
def test_implausible_values_are_quarantined_naming_field_and_bound(changes: dict[str, Any], reason: str) -> None:
    result = transform_batch([activity(id=1), activity(id=2, **changes)], strava_activity_row)
    assert [row["id"] for row in result.rows] == [1]
    (bad,) = result.quarantined
    assert (bad.record_key, bad.reason) == ("2", reason)
    for value in changes.values():
        if value is not ... and len(str(value)) > 3:
            assert str(value) not in bad.reason


@pytest.mark.parametrize("changes", [
    {"distance": 0}, {"distance": 10_000_000}, {"elapsed_time": 30 * 86400}, {"max_speed": 350},
    {"average_heartrate": 20}, {"max_heartrate": 260}, {"average_watts": 3_000}, {"total_elevation_gain": 100_000},
    {"start_date": "2000-01-01T00:00:00Z"}, {"start_date": "2099-12-31T23:59:59Z"},
    {"start_date": "2000-01-01T00:30:00-01:00"} | {"start_date_local": "2000-01-01T00:30:00Z"},
    {"name": "n" * 2_000}, {"sport_type": "R" * 100}, {"utc_offset": -12 * 3600},
])
def test_values_at_the_bounds_load(changes: dict[str, Any]) -> None:
    assert strava_activity_row(activity(**changes))["id"] == ACTIVITY["id"]


def test_every_strava_bound_is_a_column() -> None:
    assert set(BOUNDS["strava_activity"]) <= set(strava_activity_row(activity()))

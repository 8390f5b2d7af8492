"""The Google Health (Fitbit) transforms, without a database or HTTP: data points built by hand
in the API's shapes (api-notes section 1), with every trap in them."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest

from fitness_pipeline.transforms.bounds import BOUNDS
from fitness_pipeline.transforms.fields import MAX_DEPTH, RecordError
from fitness_pipeline.transforms.fitbit import (
    BODY_FAT_MATCH_SECONDS,
    HeightHistory,
    fitbit_calories_row,
    fitbit_height_row,
    fitbit_weight_batch,
    fitbit_weight_row,
    rollup_key,
    sample,
)
from fitness_pipeline.transforms.records import transform_batch

USER = "users/108527364915620845632"
UTC = dt.UTC

# The weight item of api-notes, verbatim: a Tokyo morning weigh-in, the previous day in UTC.
DOCUMENTED_WEIGHT: dict[str, Any] = {
    "name": f"{USER}/dataTypes/weight/dataPoints/8107172512320991248",
    "dataSource": {"recordingMethod": "MANUAL", "platform": "FITBIT",
                   "device": {"displayName": "Pixel 9", "manufacturer": "Google", "formFactor": "PHONE"},
                   "application": {"packageName": "com.fitbit.FitbitMobile", "displayName": "Fitbit"}},
    "weight": {"sampleTime": {"physicalTime": "2026-09-25T22:15:10Z", "utcOffset": "32400s",
                              "civilTime": {"date": {"year": 2026, "month": 9, "day": 26},
                                            "time": {"hours": 7, "minutes": 15, "seconds": 10}}},
               "weightGrams": 90200},
}


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def sample_time(physical: str, offset: int | None = -25200, *, civil: bool = True) -> dict[str, Any]:
    """A ``sampleTime`` as Google writes it: civilTime derived from the instant and the offset,
    TimeOfDay fields that are zero left out (proto3 JSON)."""
    st: dict[str, Any] = {"physicalTime": physical}
    if offset is not None:
        st["utcOffset"] = f"{offset}s"
        if civil:
            local = utc(physical) + dt.timedelta(seconds=offset)
            clock = {"hours": local.hour, "minutes": local.minute, "seconds": local.second}
            st["civilTime"] = {"date": {"year": local.year, "month": local.month, "day": local.day},
                               "time": {k: v for k, v in clock.items() if v}}
    return st


def weight(point_id: int | str, physical: str, grams: Any = 85000, offset: int | None = -25200,
           **body: Any) -> dict[str, Any]:
    return {"name": f"{USER}/dataTypes/weight/dataPoints/{point_id}",
            "dataSource": {"recordingMethod": "PASSIVELY_MEASURED", "platform": "FITBIT"},
            "weight": {"sampleTime": sample_time(physical, offset), "weightGrams": grams, **body}}


def body_fat(point_id: int | str, physical: str, percentage: Any, offset: int = -25200) -> dict[str, Any]:
    return {"name": f"{USER}/dataTypes/body-fat/dataPoints/{point_id}",
            "dataSource": {"recordingMethod": "PASSIVELY_MEASURED", "platform": "FITBIT"},
            "bodyFat": {"sampleTime": sample_time(physical, offset), "percentage": percentage}}


def height(point_id: int | str, physical: str, millimetres: Any = "1780") -> dict[str, Any]:
    return {"name": f"{USER}/dataTypes/height/dataPoints/{point_id}",
            "dataSource": {"recordingMethod": "MANUAL", "platform": "FITBIT"},
            "height": {"sampleTime": sample_time(physical), "heightMillimeters": millimetres}}


def envelopes(*points: dict[str, Any]) -> list[dict[str, Any]]:
    """Landed records as the weight task writes them: ``{"dataType", "point"}``."""
    return [{"dataType": "body-fat" if "bodyFat" in p else "weight", "point": p} for p in points]


def rollup(day: dt.date, kcal: Any) -> dict[str, Any]:
    end = day + dt.timedelta(days=1)
    return {"civilStartTime": {"date": {"year": day.year, "month": day.month, "day": day.day}},
            "civilEndTime": {"date": {"year": end.year, "month": end.month, "day": end.day}},
            "nutritionLog": {"energy": {"kcalSum": kcal}}}


def no_heights() -> HeightHistory:
    return HeightHistory.of([])


# --- weight ---------------------------------------------------------------------------------------


def test_documented_weight_item() -> None:
    row = fitbit_weight_row(DOCUMENTED_WEIGHT, {}, no_heights())
    assert row == {
        "id": 8107172512320991248,
        "weight": 90.2,  # grams → kg
        "bmi": None,  # no height known
        "fat": None,  # no body-fat point
        "record_date": dt.date(2026, 9, 26),  # the civil date in Tokyo, a day after the UTC date
        "record_time": dt.time(7, 15, 10),
        "measured_at": dt.datetime(2026, 9, 25, 22, 15, 10, tzinfo=UTC),
        "utc_offset": 32400,
        "platform": "FITBIT",
        "recording_method": "MANUAL",
        "data_point_name": DOCUMENTED_WEIGHT["name"],
        "raw": row["raw"],
    }
    assert json.loads(row["raw"]) == DOCUMENTED_WEIGHT


@pytest.mark.parametrize(("grams", "kilograms"), [(90200, 90.2), (72575, 72.575), (88904.0, 88.904), (10001, 10.001)])
def test_grams_to_kilograms(grams: float, kilograms: float) -> None:
    assert fitbit_weight_row(weight(1, "2026-09-25T14:00:00Z", grams), {}, no_heights())["weight"] == \
        pytest.approx(kilograms)


def test_late_evening_los_angeles_weigh_in_keeps_its_civil_date() -> None:
    # 22:30:10 on 25 September in Los Angeles (PDT, -7 h) is 05:30:10 on the 26th in UTC
    row = fitbit_weight_row(weight(2, "2026-09-26T05:30:10Z", offset=-25200), {}, no_heights())
    assert row["utc_offset"] == -25200
    assert row["measured_at"] == dt.datetime(2026, 9, 26, 5, 30, 10, tzinfo=UTC)
    assert row["record_date"] == dt.date(2026, 9, 25)  # the civil date, not the UTC one
    assert row["record_time"] == dt.time(22, 30, 10)


def test_negative_offset_in_winter() -> None:
    row = fitbit_weight_row(weight(3, "2026-12-01T07:59:00Z", offset=-28800), {}, no_heights())
    assert row["utc_offset"] == -28800
    assert (row["record_date"], row["record_time"]) == (dt.date(2026, 11, 30), dt.time(23, 59))


@pytest.mark.parametrize(("time_of_day", "expected"), [
    ({"hours": 7}, dt.time(7, 0, 0)),
    ({"hours": 7, "seconds": 5}, dt.time(7, 0, 5)),
    ({"minutes": 30}, dt.time(0, 30, 0)),
    ({}, dt.time(0, 0, 0)),  # midnight: every field is zero, hence left out
])
def test_civil_time_with_zero_fields_left_out(time_of_day: dict[str, int], expected: dt.time) -> None:
    point = copy.deepcopy(DOCUMENTED_WEIGHT)
    point["weight"]["sampleTime"]["civilTime"]["time"] = time_of_day
    assert fitbit_weight_row(point, {}, no_heights())["record_time"] == expected


@pytest.mark.parametrize(("physical", "offset", "date", "time"), [
    ("2026-09-26T05:30:10Z", -25200, dt.date(2026, 9, 25), dt.time(22, 30, 10)),
    ("2026-09-25T22:15:10Z", 32400, dt.date(2026, 9, 26), dt.time(7, 15, 10)),
    ("2026-09-25T12:00:00Z", 0, dt.date(2026, 9, 25), dt.time(12, 0)),
])
def test_missing_civil_time_falls_back_to_physical_time_and_offset(physical: str, offset: int, date: dt.date,
                                                                   time: dt.time) -> None:
    point = weight(4, physical)
    point["weight"]["sampleTime"] = sample_time(physical, offset, civil=False)
    row = fitbit_weight_row(point, {}, no_heights())
    assert (row["record_date"], row["record_time"], row["utc_offset"]) == (date, time, offset)


def test_neither_civil_time_nor_offset_is_a_clear_error() -> None:
    point = weight(5, "2026-09-25T12:00:00Z")
    point["weight"]["sampleTime"] = {"physicalTime": "2026-09-25T12:00:00Z"}
    with pytest.raises(RecordError, match="neither civilTime nor utcOffset"):
        fitbit_weight_row(point, {}, no_heights())


def test_sample_reads_the_shared_fields_of_any_type() -> None:
    s = sample(body_fat(77, "2026-09-26T05:30:10Z", 21.4), "bodyFat")
    assert (s.point_id, s.measured_at, s.utc_offset, s.civil_date, s.civil_time) == (
        77, dt.datetime(2026, 9, 26, 5, 30, 10, tzinfo=UTC), -25200, dt.date(2026, 9, 25), dt.time(22, 30, 10))
    assert s.body["percentage"] == 21.4


@pytest.mark.parametrize("point_id", [2**63 - 1, 2**63, 13_852_740_181_436_229_017, 2**64 - 1])
def test_ids_above_signed_bigint_are_kept_exactly(point_id: int) -> None:
    row = fitbit_weight_row(weight(point_id, "2026-09-25T14:00:00Z"), {}, no_heights())
    assert row["id"] == point_id
    assert row["data_point_name"].endswith(f"/dataPoints/{point_id}")


# --- body fat -------------------------------------------------------------------------------------

WEIGHED_AT = "2026-09-25T14:00:30Z"


def fat_seconds_away(seconds: int) -> str:
    return (utc(WEIGHED_AT) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(("seconds_away", "fat"), [
    (None, None),  # no body-fat point at all
    (0, 21.4),  # the same instant (how scales report it)
    (30, 21.4),
    (-30, 21.4),
    (BODY_FAT_MATCH_SECONDS, 21.4),  # "within 60 s"
    (61, None),
    (-61, None),
    (3600, None),
])
def test_body_fat_within_60_seconds_belongs_to_the_weighing(seconds_away: int | None, fat: float | None) -> None:
    points = [weight(10, WEIGHED_AT)]
    if seconds_away is not None:
        points.append(body_fat(11, fat_seconds_away(seconds_away), 21.4))
    result = fitbit_weight_batch(envelopes(*points))
    assert result.quarantined == []
    (row,) = result.rows
    assert row["fat"] == fat


def test_the_closest_body_fat_point_wins() -> None:
    result = fitbit_weight_batch(envelopes(
        weight(10, WEIGHED_AT),
        body_fat(11, fat_seconds_away(40), 30.0),
        body_fat(12, fat_seconds_away(-20), 22.0),
        body_fat(13, fat_seconds_away(-50), 25.0),
    ))
    assert [row["fat"] for row in result.rows] == [22.0]
    exact = fitbit_weight_batch(envelopes(
        weight(10, WEIGHED_AT), body_fat(11, fat_seconds_away(1), 30.0), body_fat(12, WEIGHED_AT, 21.0)))
    assert [row["fat"] for row in exact.rows] == [21.0]


def test_body_fat_on_some_samples_only() -> None:
    # a scale weigh-in with body fat, a manual entry without, and a scale weigh-in with body fat
    result = fitbit_weight_batch(envelopes(
        weight(1, "2026-09-24T13:10:05Z"), body_fat(101, "2026-09-24T13:10:05Z", 21.9),
        weight(2, "2026-09-25T02:00:00Z"),
        weight(3, "2026-09-26T05:30:10Z"), body_fat(103, "2026-09-26T05:30:10Z", 22.3),
    ))
    assert result.quarantined == []
    assert {row["id"]: row["fat"] for row in result.rows} == {1: 21.9, 2: None, 3: 22.3}


# --- height and BMI -------------------------------------------------------------------------------

SETUP = utc("2024-01-10T04:15:05Z")
CORRECTION = utc("2025-06-12T16:40:41Z")
HEIGHTS = HeightHistory.of([(CORRECTION, 1776), (SETUP, 1780)])  # any order


def test_no_height_means_no_bmi() -> None:
    assert fitbit_weight_row(weight(1, "2026-09-25T14:00:00Z", 90200), {}, no_heights())["bmi"] is None
    # weighed before the first height was ever entered
    assert fitbit_weight_row(weight(1, "2023-12-25T14:00:00Z", 90200), {}, HEIGHTS)["bmi"] is None


@pytest.mark.parametrize(("weighed_at", "metres"), [
    ("2024-01-10T04:15:05Z", 1.780),  # the very instant the height was entered
    ("2025-06-12T16:40:40Z", 1.780),  # a second before the correction: the later height does not apply
    ("2025-06-12T16:40:41Z", 1.776),
    ("2026-09-25T14:00:00Z", 1.776),  # the latest height, however old
])
def test_bmi_uses_the_height_in_force_at_the_weighing(weighed_at: str, metres: float) -> None:
    row = fitbit_weight_row(weight(1, weighed_at, 90200), {}, HEIGHTS)
    assert row["bmi"] == pytest.approx(90.2 / metres**2)
    assert 28 < row["bmi"] < 29


def test_batch_uses_the_heights_it_is_given() -> None:
    result = fitbit_weight_batch(envelopes(weight(1, "2025-01-01T14:00:00Z", 81000),
                                           weight(2, "2026-01-01T14:00:00Z", 81000)),
                                 heights=[(SETUP, 1800), (CORRECTION, 1750)])
    assert [round(row["bmi"], 2) for row in result.rows] == [round(81 / 1.8**2, 2), round(81 / 1.75**2, 2)]


@pytest.mark.parametrize("millimetres", ["1780", 1780])
def test_height_row_reads_int64_sent_as_a_string(millimetres: Any) -> None:
    point = height(2**64 - 2, "2024-01-10T04:15:05Z", millimetres)
    row = fitbit_height_row(point)
    assert row == {"id": 2**64 - 2, "height_mm": 1780, "measured_at": SETUP, "data_point_name": point["name"],
                   "raw": row["raw"]}
    assert json.loads(row["raw"]) == point


@pytest.mark.parametrize(("millimetres", "reason"), [
    ("0", "heightMillimeters must be positive"),
    ("-1780", "heightMillimeters must be an integer, got str"),
    ("tall", "heightMillimeters must be an integer, got str"),
    ("17800", "heightMillimeters is out of range"),
    (None, "heightMillimeters is missing"),
])
def test_bad_heights_are_quarantined_without_their_value(millimetres: Any, reason: str) -> None:
    result = transform_batch([height(9, "2024-01-10T04:15:05Z", millimetres)], fitbit_height_row)
    assert result.rows == []
    assert [r.reason for r in result.quarantined] == [reason]
    assert str(millimetres) not in result.quarantined[0].reason


# --- calories -------------------------------------------------------------------------------------


def test_calories_one_row_per_logged_day() -> None:
    # a dailyRollUp answer, newest first; 24 September had no logs, so Google left it out
    rollups = [rollup(dt.date(2026, 9, 25), 2191.0), rollup(dt.date(2026, 9, 23), 1840.5)]
    result = transform_batch(rollups, fitbit_calories_row)
    assert result.quarantined == []
    assert [(r["record_date"], r["calories"]) for r in result.rows] == [
        (dt.date(2026, 9, 25), 2191.0), (dt.date(2026, 9, 23), 1840.5)]
    assert json.loads(result.rows[0]["raw"]) == rollups[0]


@pytest.mark.parametrize(("day", "epoch"), [(dt.date(2026, 9, 25), 1790294400), (dt.date(2024, 2, 29), 1709164800),
                                            (dt.date(2000, 1, 1), 946684800)])
def test_calories_id_is_midnight_utc_in_epoch_seconds(day: dt.date, epoch: int) -> None:
    assert fitbit_calories_row(rollup(day, 1500))["id"] == epoch


@pytest.mark.parametrize(("change", "reason"), [
    (lambda r: r["nutritionLog"]["energy"].update(kcalSum=-5.0), "kcalSum must be a non-negative number"),
    (lambda r: r["nutritionLog"]["energy"].pop("kcalSum"), "kcalSum must be a non-negative number"),
    (lambda r: r["nutritionLog"].update(energy={"kcalSum": "lots"}), "kcalSum must be a number, got str"),
    (lambda r: r.pop("nutritionLog"), "kcalSum must be a non-negative number"),
    (lambda r: r["civilStartTime"].update(date={"year": 2026, "month": 2, "day": 30}), "civilStartTime.date"),
    (lambda r: r.pop("civilStartTime"), "civilStartTime.date"),
])
def test_bad_rollups_are_quarantined(change: Any, reason: str) -> None:
    record = rollup(dt.date(2026, 9, 25), 2191.0)
    change(record)
    result = transform_batch([record, rollup(dt.date(2026, 9, 24), 1900.0)], fitbit_calories_row)
    assert [r["record_date"] for r in result.rows] == [dt.date(2026, 9, 24)]
    (entry,) = result.quarantined
    assert reason in entry.reason
    assert "lots" not in entry.reason and "-5" not in entry.reason


# --- quarantine -----------------------------------------------------------------------------------


def test_malformed_points_are_quarantined_while_the_rest_loads() -> None:
    good = [weight(1, "2026-09-24T13:10:05Z"), body_fat(101, "2026-09-24T13:10:05Z", 21.9),
            weight(2, "2026-09-25T13:12:45Z")]
    no_sample_time = weight(3, "2026-09-25T14:00:00Z")
    del no_sample_time["weight"]["sampleTime"]
    fat_out_of_range = body_fat(102, "2026-09-25T13:12:45Z", 123.4)  # at weight 2's instant
    bad_instant = weight(6, "2026-09-25T14:00:00Z")
    bad_instant["weight"]["sampleTime"]["physicalTime"] = "yesterday at 7"
    bad = {
        "weightGrams must be a number, got str": weight(4, "2026-09-25T14:00:00Z", "ninety kilos"),
        "weightGrams must be between 10 and 700 kg": weight(5, "2026-09-25T14:00:00Z", -72500),
        "weight.sampleTime is missing": no_sample_time,
        "the data point id is not an unsigned 64-bit number": weight("x93f0-77", "2026-09-25T14:00:00Z"),
        "bodyFat.percentage must be between 1 and 80 %": fat_out_of_range,
        "physicalTime is not an ISO 8601 date-time": bad_instant,
    }
    records = [*envelopes(*good, *bad.values()), {"dataType": "steps", "point": {"steps": 8123}}]
    result = fitbit_weight_batch(records)

    assert {row["id"]: row["fat"] for row in result.rows} == {1: 21.9, 2: None}  # 123.4 % was not attached
    by_reason = {r.reason: r for r in result.quarantined}
    assert set(by_reason) == {*bad, "not a weight, body-fat or height envelope"}
    keys = {reason: by_reason[reason].record_key for reason in bad}
    # the key is the id as fitbit_weight.id holds it, so a quarantined weight counts as present upstream;
    # body-fat points are keyed apart; an id that cannot be read falls back to a hash
    assert keys.pop("bodyFat.percentage must be between 1 and 80 %") == "body-fat/102"
    assert keys.pop("the data point id is not an unsigned 64-bit number").startswith("sha256:")
    assert keys == {reason: bad[reason]["name"].rsplit("/", 1)[1] for reason in keys}
    for reason, point in bad.items():
        assert json.loads(by_reason[reason].payload) == point
    assert json.loads(by_reason["not a weight, body-fat or height envelope"].payload) == records[-1]
    for entry in result.quarantined:  # reasons name fields and types, never the values
        for value in ("ninety kilos", "72500", "x93f0", "123.4", "yesterday", "8123"):
            assert value not in entry.reason


def test_a_record_that_is_not_an_object_is_quarantined() -> None:
    result = fitbit_weight_batch([{"dataType": "weight", "point": ["90200"]}, *envelopes(weight(1, WEIGHED_AT))])
    assert [row["id"] for row in result.rows] == [1]
    assert [r.reason for r in result.quarantined] == ["record must be a JSON object, got list"]


def test_an_id_beyond_64_bits_is_quarantined() -> None:
    result = fitbit_weight_batch(envelopes(weight(2**64, WEIGHED_AT), weight(2**64 - 1, WEIGHED_AT)))
    assert [row["id"] for row in result.rows] == [2**64 - 1]
    assert [r.reason for r in result.quarantined] == ["the data point id is not an unsigned 64-bit number"]


def test_an_id_with_a_non_ascii_digit_is_quarantined_not_fatal() -> None:
    result = fitbit_weight_batch(envelopes(weight("8107172512320991248²", WEIGHED_AT), weight(1, WEIGHED_AT)))
    assert [row["id"] for row in result.rows] == [1]
    assert [r.reason for r in result.quarantined] == ["the data point id is not an unsigned 64-bit number"]


def test_a_height_with_a_non_ascii_digit_is_quarantined_not_fatal() -> None:
    result = transform_batch([height(9, "2024-01-10T04:15:05Z", "1780²"), height(10, "2024-01-10T04:15:05Z")],
                             fitbit_height_row)
    assert [row["id"] for row in result.rows] == [10]
    assert [r.reason for r in result.quarantined] == ["heightMillimeters must be an integer, got str"]


# --- deep nesting (issue 10, defect 2) ------------------------------------------------------------


def nested(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(levels):
        value = {"x": value} if level % 2 else [value]
    return value


TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


@pytest.mark.parametrize("levels", [MAX_DEPTH, 900, 5_000])
def test_a_deeply_nested_weight_is_quarantined_and_the_rest_loads(levels: int) -> None:
    deep = weight(2, WEIGHED_AT)
    deep["dataSource"]["device"] = nested(levels)
    result = fitbit_weight_batch(envelopes(weight(1, WEIGHED_AT), deep, weight(3, WEIGHED_AT)))
    assert [row["id"] for row in result.rows] == [1, 3]
    (bad,) = result.quarantined
    assert (bad.record_key, bad.reason) == ("2", TOO_DEEP)
    assert json.loads(bad.payload)["name"] == deep["name"]


def test_a_weight_just_within_the_nesting_limit_loads() -> None:
    point = weight(2, WEIGHED_AT)
    point["dataSource"]["device"] = nested(MAX_DEPTH - 2)  # point (1) > dataSource (2) > device (3...)
    assert fitbit_weight_row(point, {}, no_heights())["id"] == 2


def test_deep_heights_rollups_and_envelopes_are_one_record_each() -> None:
    deep_height = height(9, "2024-01-10T04:15:05Z")
    deep_height["extra"] = nested(900)
    heights = transform_batch([deep_height, height(10, "2024-01-10T04:15:05Z")], fitbit_height_row)
    assert [row["id"] for row in heights.rows] == [10] and heights.quarantined[0].reason == TOO_DEEP
    deep_rollup = rollup(dt.date(2026, 9, 25), 2191.0)
    deep_rollup["nutritionLog"]["more"] = nested(900)
    calories = transform_batch([deep_rollup, rollup(dt.date(2026, 9, 24), 1900.0)], fitbit_calories_row,
                               key=rollup_key)
    assert [r["record_date"] for r in calories.rows] == [dt.date(2026, 9, 24)]
    assert (calories.quarantined[0].record_key, calories.quarantined[0].reason) == ("2026-09-25", TOO_DEEP)
    weights = fitbit_weight_batch([nested(5_000), *envelopes(weight(1, WEIGHED_AT))])
    assert [row["id"] for row in weights.rows] == [1]
    assert weights.quarantined[0].record_key.startswith("sha256:")


# --- plausibility bounds (issue 10, defect 6) -----------------------------------------------------


@pytest.mark.parametrize(("grams", "ok"), [(9_999, False), (10_000, True), (700_000, True), (700_001, False),
                                           (-72_500, False), (0, False)])
def test_weight_bounds(grams: float, ok: bool) -> None:
    result = fitbit_weight_batch(envelopes(weight(1, WEIGHED_AT, grams)))
    assert bool(result.rows) is ok
    if not ok:
        assert [r.reason for r in result.quarantined] == ["weightGrams must be between 10 and 700 kg"]


@pytest.mark.parametrize(("percentage", "fat"), [(0.5, None), (1, 1.0), (80, 80.0), (80.5, None), (-3, None)])
def test_body_fat_bounds(percentage: float, fat: float | None) -> None:
    result = fitbit_weight_batch(envelopes(weight(1, WEIGHED_AT), body_fat(101, WEIGHED_AT, percentage)))
    assert [row["fat"] for row in result.rows] == [fat]
    assert [r.reason for r in result.quarantined] == ([] if fat else ["bodyFat.percentage must be between 1 and 80 %"])


@pytest.mark.parametrize(("millimetres", "ok"), [("499", False), ("500", True), ("2800", True), ("2801", False)])
def test_height_bounds(millimetres: str, ok: bool) -> None:
    result = transform_batch([height(9, "2024-01-10T04:15:05Z", millimetres)], fitbit_height_row)
    assert bool(result.rows) is ok
    if not ok:
        assert [r.reason for r in result.quarantined] == ["heightMillimeters must be between 500 and 2,800 mm"]


@pytest.mark.parametrize(("kcal", "ok"), [(0, True), (30_000, True), (30_001, False), (1e300, False)])
def test_calorie_bounds(kcal: float, ok: bool) -> None:
    result = transform_batch([rollup(dt.date(2026, 9, 25), kcal)], fitbit_calories_row)
    assert bool(result.rows) is ok
    if not ok:
        assert [r.reason for r in result.quarantined] == [
            "nutritionLog.energy.kcalSum must be between 0 and 30,000 kcal"]


DATES = "must be between 2000-01-01 and 2099-12-31"


@pytest.mark.parametrize(("physical", "ok"), [("1999-12-31T12:00:00Z", False), ("2000-01-01T12:00:00Z", True),
                                              ("2099-12-31T00:00:00Z", True), ("9999-06-01T00:00:00Z", False),
                                              ("1970-01-01T00:00:00Z", False)])
def test_dates_of_data_points_are_bounded(physical: str, ok: bool) -> None:
    weights = fitbit_weight_batch(envelopes(weight(1, physical, offset=0)))
    heights = transform_batch([height(9, physical)], fitbit_height_row)
    fat = fitbit_weight_batch(envelopes(body_fat(101, physical, 20.0, offset=0)))
    assert (bool(weights.rows), bool(heights.rows), bool(fat.quarantined)) == (ok, ok, not ok)
    if not ok:
        reason = f"sampleTime.physicalTime {DATES}"
        assert [r.reason for r in weights.quarantined + heights.quarantined + fat.quarantined] == [reason] * 3


def test_a_civil_date_out_of_bounds_is_quarantined() -> None:
    point = weight(1, "2000-01-01T02:00:00Z", offset=-4 * 3600)  # the civil date is 1999-12-31
    assert [r.reason for r in fitbit_weight_batch(envelopes(point)).quarantined] == [f"civilTime.date {DATES}"]


@pytest.mark.parametrize(("day", "ok"), [(dt.date(1999, 12, 31), False), (dt.date(2000, 1, 1), True),
                                         (dt.date(2099, 12, 31), True), (dt.date(9999, 6, 1), False)])
def test_calorie_dates_are_bounded(day: dt.date, ok: bool) -> None:
    result = transform_batch([rollup(day, 1500)], fitbit_calories_row)
    assert bool(result.rows) is ok
    if not ok:
        assert [r.reason for r in result.quarantined] == [f"civilStartTime.date {DATES}"]


@pytest.mark.parametrize(("where", "reason"), [
    ("platform", "dataSource.platform must be at most 100 characters long"),
    ("recordingMethod", "dataSource.recordingMethod must be at most 100 characters long"),
])
def test_megabyte_texts_are_quarantined(where: str, reason: str) -> None:
    point = weight(1, WEIGHED_AT)
    point["dataSource"][where] = "M" * 1_000_000
    result = fitbit_weight_batch(envelopes(point))
    assert result.rows == [] and [r.reason for r in result.quarantined] == [reason]


def test_a_megabyte_data_point_name_is_quarantined() -> None:
    point = weight(1, WEIGHED_AT)
    point["name"] = f"{USER}/dataTypes/weight/{'x' * 1_000_000}/dataPoints/1"
    result = fitbit_weight_batch(envelopes(point))
    assert result.rows == []
    assert [r.reason for r in result.quarantined] == ["name must be at most 1,000 characters long"]


def test_every_fitbit_bound_is_a_column() -> None:
    point = weight(1, WEIGHED_AT)
    assert set(BOUNDS["fitbit_weight"]) <= set(fitbit_weight_row(point, {}, no_heights()))
    assert set(BOUNDS["fitbit_height"]) <= set(fitbit_height_row(height(9, "2024-01-10T04:15:05Z")))
    assert set(BOUNDS["fitbit_calories"]) <= set(fitbit_calories_row(rollup(dt.date(2026, 9, 25), 1)))

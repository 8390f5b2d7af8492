"""Property-based tests of the pure transforms (Hypothesis): any JSON value in, for each record either a
row or a quarantine entry with a reason out, never an exception (issue 10, hostile payloads).

Records are drawn two ways: any JSON value at all, and records shaped like the APIs' own (a documented
example) with any field replaced by any JSON value or left out, which reaches the field readers."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fitness_pipeline.transforms.fitbit import fitbit_calories_row, fitbit_weight_batch, google_point_key, rollup_key
from fitness_pipeline.transforms.records import TransformResult, transform_batch
from fitness_pipeline.transforms.strava import strava_activity_row

#: every JSON scalar, the hostile ones included: NUL and lone surrogates, numbers past every range, -0.0
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.just(-0.0),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=30),
    st.sampled_from(["", "\x00", "\ud800", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1e400", "-0",
                     "2026-02-30T00:00:00Z", "NaN"]),
)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4), max_leaves=12)

ACTIVITY = {  # Strava's documented SummaryActivity, shortened
    "id": 154504250376823, "athlete": {"id": 134815}, "name": "Happy Friday", "distance": 28099.0,
    "moving_time": 4207, "elapsed_time": 4410, "total_elevation_gain": 516.0, "type": "Ride",
    "sport_type": "MountainBikeRide",
    "start_date": "2018-05-02T12:15:09Z", "start_date_local": "2018-05-02T05:15:09Z",
    "timezone": "(GMT-08:00) America/Los_Angeles", "utc_offset": -25200, "upload_id_str": "987654321234567891234",
    "average_speed": 6.679, "max_speed": 18.5, "average_watts": 185.5, "kilojoules": 780.5, "manual": False,
    "private": False, "visibility": "everyone", "trainer": False, "commute": False, "workout_type": 10,
}
WEIGHT = {
    "name": "users/1/dataTypes/weight/dataPoints/7294827498274982749",
    "weight": {"sampleTime": {"physicalTime": "2026-09-25T14:00:30Z", "utcOffset": "-25200s",
                              "civilTime": {"date": {"year": 2026, "month": 9, "day": 25},
                                            "time": {"hours": 7, "seconds": 30}}},
               "weightGrams": 85000, "platform": "FITBIT", "recordingMethod": "MANUAL"},
}
ROLLUP = {"civilStartTime": {"date": {"year": 2026, "month": 9, "day": 25}},
          "nutritionLog": {"energy": {"kcalSum": 2100.5}}}


def mutated(example: dict[str, Any]) -> st.SearchStrategy[Any]:
    """``example`` with some fields replaced by any JSON value and some left out."""
    return st.fixed_dictionaries({}, optional={key: st.one_of(st.just(value), JSON) for key, value in example.items()})


def assert_total(records: list[Any], result: TransformResult, absorbed: int = 0) -> None:
    """Every record became a row or a quarantine entry with a reason (up to ``absorbed`` records may become
    part of other rows: body fat joins its weighing), and the entries can be stored."""
    companions = sum(len(c.rows) + len(c.quarantined) for c in result.companions.values())
    accounted = len(result.rows) + len(result.quarantined) + companions
    assert len(records) - absorbed <= accounted <= len(records)
    for entry in result.quarantined:
        assert entry.reason and isinstance(entry.record_key, str) and entry.record_key
        entry.payload.encode("ascii")  # stored as text: escaped, never a raw NUL or surrogate
        json.loads(entry.payload)


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.lists(st.one_of(JSON, mutated(ACTIVITY)), max_size=5))
def test_strava_any_json_in_rows_or_reasons_out(records: list[Any]) -> None:
    assert_total(records, transform_batch(records, strava_activity_row))


@FAST
@given(st.lists(st.one_of(JSON, mutated(ROLLUP)), max_size=5))
def test_calories_any_json_in_rows_or_reasons_out(records: list[Any]) -> None:
    assert_total(records, transform_batch(records, fitbit_calories_row, key=rollup_key))


@FAST
@given(st.lists(st.one_of(JSON, st.fixed_dictionaries({"dataType": st.sampled_from(["weight", "body-fat", "height"]),
                                                      "point": st.one_of(JSON, mutated(WEIGHT))})), max_size=5))
def test_weight_batches_any_json_in_rows_or_reasons_out(records: list[Any]) -> None:
    body_fat = sum(1 for r in records if isinstance(r, dict) and r.get("dataType") == "body-fat")
    assert_total(records, fitbit_weight_batch(records), absorbed=body_fat)


def test_the_examples_themselves_load() -> None:
    """The strategies' templates are valid records: a mutated record that keeps them reaches the rows."""
    assert transform_batch([ACTIVITY], strava_activity_row).rows
    assert transform_batch([ROLLUP], fitbit_calories_row, key=rollup_key).rows
    assert fitbit_weight_batch([{"dataType": "weight", "point": WEIGHT}]).rows
    # and the accounting notices a lost record
    half = transform_batch([ACTIVITY, ACTIVITY], strava_activity_row)
    half.rows.pop()
    try:
        assert_total([ACTIVITY, ACTIVITY], half)
    except AssertionError:
        pass
    else:
        raise AssertionError("assert_total missed a lost record")
    assert google_point_key(WEIGHT) == "7294827498274982749"

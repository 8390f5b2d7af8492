"""Plausibility bounds: the one table of what a value may physically be, per target table and column.

A value of the right type can still be impossible (a negative distance, a start in year 9999, a
megabyte-long sport type). :func:`check_bounds` quarantines such a record with a reason that names
the field and the bound, never the value (records hold personal data). The bounds are generous on
purpose: quarantining a real activity costs the user more than loading an odd but possible one, so
each bound sits beyond anything a person and a device can record, not at what is usual. The README's
"Tables" section lists them; change them here only.

Dates: the row functions are pure (JSON in, row out; no clock), so the upper bound is a fixed year,
not "now". :data:`EARLIEST` is before every consumer GPS sport watch and before both services
(Strava 2009, Fitbit 2009): older dates are uploads of files no device wrote. :data:`LATEST` keeps
year-9999 dates (which fall outside every reconcile range, so such a row could never be marked
deleted) out of the tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fitness_pipeline.transforms.fields import RecordError

EARLIEST = dt.date(2000, 1, 1)
LATEST = dt.date(2099, 12, 31)

DAY_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Bound:
    """``low <= value <= high`` (numbers in ``unit``; dates and datetimes by their date, which for
    an aware datetime is its UTC date); ``max_chars`` for text. ``field``: the API's name of the
    value, for the reason, when it differs from the column's."""

    low: float | dt.date | None = None
    high: float | dt.date | None = None
    unit: str = ""
    max_chars: int | None = None
    field: str | None = None

    def admits(self, value: Any) -> bool:
        if value is None:
            return True
        if self.max_chars is not None:
            return len(value) <= self.max_chars
        if isinstance(value, dt.datetime):
            value = value.date()
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.max_chars is not None:
            return f"at most {self.max_chars:,} characters long"
        unit = f" {self.unit}" if self.unit else ""
        return f"between {_show(self.low)} and {_show(self.high)}{unit}"


def _show(limit: float | dt.date | None) -> str:
    if isinstance(limit, dt.date):
        return limit.isoformat()
    if isinstance(limit, float) and not limit.is_integer():
        return f"{limit:,}"
    return f"{int(limit or 0):,}"


def _dates(field: str | None = None) -> Bound:
    return Bound(EARLIEST, LATEST, field=field)


def _text(max_chars: int, field: str | None = None) -> Bound:
    return Bound(max_chars=max_chars, field=field)


#: bounds by table, then column (checked in this order, so the first reason is the most specific)
BOUNDS: Mapping[str, Mapping[str, Bound]] = {
    "strava_activity": {
        "distance": Bound(0, 10_000_000, "m"),  # 10,000 km: a month-long recording at 330 km a day
        "moving_time": Bound(0, 30 * DAY_SECONDS, "s"),  # 30 days
        "elapsed_time": Bound(0, 30 * DAY_SECONDS, "s"),
        "total_elevation_gain": Bound(0, 100_000, "m"),  # 100 km: eleven Everests
        "average_speed": Bound(0, 350, "m/s"),  # beyond an airliner: a recording left on in flight is still real
        "max_speed": Bound(0, 350, "m/s"),
        "average_cadence": Bound(0, 300, "rpm"),
        "average_heartrate": Bound(20, 260, "bpm"),
        "max_heartrate": Bound(20, 260, "bpm"),
        "average_watts": Bound(0, 3_000, "W"),  # above a track sprinter's peak
        "kilojoules": Bound(0, 200_000, "kJ"),
        "utc_offset": Bound(-18 * 3600, 18 * 3600, "s"),
        "start_date": _dates(),
        "start_date_local": _dates(),
        "sport_type": _text(100),
        "activity_type": _text(100, field="type"),
        "name": _text(2_000),
        "timezone": _text(200),
        "external_id": _text(2_000),
        "device_name": _text(2_000),
        "gear_id": _text(100),
        "visibility": _text(100),
    },
    "strava_activity_detail": {
        "calories": Bound(0, 100_000, "kcal"),  # a week-long ultra burns under 60,000
        "description": _text(100_000),
        "device_name": _text(2_000),
        "gear_id": _text(100, field="gear.id"),
    },
    "strava_gear": {
        "distance": Bound(0, 10_000_000_000, "m", field="gear.distance"),  # 10 million km: a lifetime on one bike
        "id": _text(100, field="gear.id"),
        "name": _text(2_000, field="gear.name"),
    },
    "strava_lap": {
        "distance": Bound(0, 10_000_000, "m", field="laps[].distance"),
        "elapsed_time": Bound(0, 30 * DAY_SECONDS, "s", field="laps[].elapsed_time"),
        "moving_time": Bound(0, 30 * DAY_SECONDS, "s", field="laps[].moving_time"),
        "total_elevation_gain": Bound(0, 100_000, "m", field="laps[].total_elevation_gain"),
        "average_speed": Bound(0, 350, "m/s", field="laps[].average_speed"),
        "max_speed": Bound(0, 350, "m/s", field="laps[].max_speed"),
        "average_heartrate": Bound(20, 260, "bpm", field="laps[].average_heartrate"),
        "max_heartrate": Bound(20, 260, "bpm", field="laps[].max_heartrate"),
        "average_cadence": Bound(0, 300, "rpm", field="laps[].average_cadence"),
        "average_watts": Bound(0, 3_000, "W", field="laps[].average_watts"),
        "lap_index": Bound(1, 100_000, field="laps[].lap_index"),
        "start_date": _dates(field="laps[].start_date"),
        "name": _text(2_000, field="laps[].name"),
    },
    "fitbit_weight": {
        "weight": Bound(10, 700, "kg", field="weightGrams"),  # the heaviest person recorded: 635 kg
        "measured_at": _dates(field="sampleTime.physicalTime"),
        "record_date": _dates(field="civilTime.date"),
        "platform": _text(100, field="dataSource.platform"),
        "recording_method": _text(100, field="dataSource.recordingMethod"),
        "data_point_name": _text(1_000, field="name"),
    },
    "fitbit_body_fat": {  # the body fat merged into fitbit_weight.fat
        "percentage": Bound(1, 80, "%", field="bodyFat.percentage"),
        "measured_at": _dates(field="sampleTime.physicalTime"),
    },
    "fitbit_height": {
        "height_mm": Bound(500, 2_800, "mm", field="heightMillimeters"),  # the tallest person recorded: 2,720 mm
        "measured_at": _dates(field="sampleTime.physicalTime"),
        "data_point_name": _text(1_000, field="name"),
    },
    "fitbit_calories": {
        "calories": Bound(0, 30_000, "kcal", field="nutritionLog.energy.kcalSum"),  # eaten in one day
        "record_date": _dates(field="civilStartTime.date"),
    },
}


def check_bounds(table: str, row: Mapping[str, Any]) -> None:
    """Raise :class:`RecordError` for the first column of ``row`` outside its bound in ``table``."""
    for column, bound in BOUNDS[table].items():
        if not bound.admits(row.get(column)):
            raise RecordError(f"{bound.field or column} must be {bound.describe()}")

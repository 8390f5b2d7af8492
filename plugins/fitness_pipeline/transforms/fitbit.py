"""Google Health API v4 (Fitbit) data points to ``fitbit_weight``, ``fitbit_height`` and
``fitbit_calories`` rows."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fitness_pipeline.transforms.bounds import check_bounds
from fitness_pipeline.transforms.fields import (
    DIGITS,
    RecordError,
    as_float,
    as_int,
    as_text,
    as_utc_instant,
    checked_json,
)
from fitness_pipeline.transforms.records import QuarantineEntry, Row, TransformResult, quarantine_entry, transform_batch

_UINT64_MAX = 2**64 - 1
#: a body-fat point belongs to a weighing when it was measured within this many seconds of it
BODY_FAT_MATCH_SECONDS = 60


@dataclass(frozen=True)
class Sample:
    """The common part of a Google Health sample data point."""

    point_id: int
    name: str
    measured_at: dt.datetime  # aware UTC
    utc_offset: int | None  # seconds east of UTC
    civil_date: dt.date
    civil_time: dt.time | None
    body: Mapping[str, Any]  # the type-specific object (``weight``, ``bodyFat``, ``height``)


def data_point_id(point: Mapping[str, Any]) -> int:
    """The numeric id at the end of a data point's ``name`` (unsigned 64-bit)."""
    name = point.get("name")
    if not isinstance(name, str) or "/dataPoints/" not in name:
        raise RecordError("name must be a data point resource name (…/dataPoints/<id>)")
    tail = name.rsplit("/", 1)[1]
    if len(tail) > 20 or not DIGITS.fullmatch(tail) or int(tail) > _UINT64_MAX:
        raise RecordError("the data point id is not an unsigned 64-bit number")
    return int(tail)


def parse_duration_seconds(value: Any, key: str) -> int | None:
    """Google's duration strings (``"-25200s"``) as whole seconds."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.endswith("s"):
        raise RecordError(f"{key} must be a duration like '3600s'")
    try:
        seconds = float(value[:-1])
    except ValueError:
        raise RecordError(f"{key} must be a duration like '3600s'") from None
    if not math.isfinite(seconds) or abs(seconds) > 18 * 3600:
        raise RecordError(f"{key} is out of range")
    return round(seconds)


def civil_date(value: Any, key: str) -> dt.date:
    """A ``google.type.Date`` object as a date."""
    if not isinstance(value, Mapping):
        raise RecordError(f"{key} must be a date object")
    try:
        return dt.date(int(value["year"]), int(value["month"]), int(value["day"]))
    except (KeyError, TypeError, ValueError):
        raise RecordError(f"{key} is not a valid date") from None


def civil_time(value: Any, key: str) -> dt.time | None:
    """A ``google.type.TimeOfDay``; Google leaves out fields that are zero."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise RecordError(f"{key} must be a time object")
    try:
        return dt.time(int(value.get("hours", 0)), int(value.get("minutes", 0)), int(value.get("seconds", 0)))
    except (TypeError, ValueError):
        raise RecordError(f"{key} is not a valid time of day") from None


def sample(point: Any, field_name: str) -> Sample:
    """The shared fields of a sample point whose type-specific object is ``point[field_name]``."""
    if not isinstance(point, Mapping):
        raise RecordError(f"record must be a JSON object, got {type(point).__name__}")
    body = point.get(field_name)
    if not isinstance(body, Mapping):
        raise RecordError(f"{field_name} is missing")
    sample_time = body.get("sampleTime")
    if not isinstance(sample_time, Mapping):
        raise RecordError(f"{field_name}.sampleTime is missing")
    measured_at = as_utc_instant(sample_time, "physicalTime")
    offset = parse_duration_seconds(sample_time.get("utcOffset"), "utcOffset")
    civil = sample_time.get("civilTime")
    if isinstance(civil, Mapping) and civil.get("date") is not None:
        local_date, local_time = civil_date(civil["date"], "civilTime.date"), civil_time(civil.get("time"),
                                                                                          "civilTime.time")
    elif offset is not None:  # no civil time sent: derive it from the instant and the offset
        local = measured_at + dt.timedelta(seconds=offset)
        local_date, local_time = local.date(), local.time()
    else:
        raise RecordError("sampleTime has neither civilTime nor utcOffset")
    return Sample(data_point_id(point), str(point["name"]), measured_at, offset, local_date, local_time, body)


def fitbit_height_row(point: Any) -> Row:
    """One ``fitbit_height`` row from a ``height`` data point."""
    s = sample(point, "height")
    height_mm = as_int(s.body, "heightMillimeters", required=True, maximum=3000)  # int64 sent as a string
    if not height_mm:
        raise RecordError("heightMillimeters must be positive")
    row = {"id": s.point_id, "height_mm": height_mm, "measured_at": s.measured_at, "data_point_name": s.name}
    check_bounds("fitbit_height", row)
    return {**row, "raw": checked_json(point)}


@dataclass(frozen=True)
class HeightHistory:
    """Heights by time, to find the one in force at a weighing."""

    heights: tuple[tuple[dt.datetime, int], ...]  # (measured_at, millimetres), sorted

    @classmethod
    def of(cls, heights: Iterable[tuple[dt.datetime, int]]) -> HeightHistory:
        return cls(tuple(sorted(heights)))

    def at(self, instant: dt.datetime) -> int | None:
        latest = None
        for measured_at, millimetres in self.heights:
            if measured_at > instant:
                break
            latest = millimetres
        return latest


def body_fat_by_instant(points: Iterable[Any]) -> tuple[dict[dt.datetime, float], list[QuarantineEntry]]:
    """Body-fat percentages keyed by their instant; unreadable points are quarantined."""
    result = transform_batch(points, _body_fat, key=lambda point: f"body-fat/{data_point_id(point)}")
    return {row["measured_at"]: row["percentage"] for row in result.rows}, result.quarantined


def _body_fat(point: Any) -> Row:
    s = sample(point, "bodyFat")
    percentage = as_float(s.body, "percentage")
    if percentage is None:
        raise RecordError("bodyFat.percentage is missing")
    row = {"measured_at": s.measured_at, "percentage": percentage}
    check_bounds("fitbit_body_fat", row)
    return row


def google_point_key(point: Any) -> str:
    """The quarantine key of a data point: its numeric id as text, like ``fitbit_weight.id``."""
    return str(data_point_id(point))


def rollup_key(rollup: Any) -> str:
    """The quarantine key of a daily roll-up: its civil date, like ``fitbit_calories.record_date``."""
    return civil_date(rollup["civilStartTime"]["date"], "civilStartTime.date").isoformat()


def fitbit_weight_row(point: Any, body_fat: Mapping[dt.datetime, float], heights: HeightHistory) -> Row:
    """One ``fitbit_weight`` row: kilograms from grams, the body fat measured with it (the
    body-fat point closest in time within 60 s) and BMI from the height in force then."""
    s = sample(point, "weight")
    grams = as_float(s.body, "weightGrams")
    if grams is None:
        raise RecordError("weightGrams is missing")
    kilograms = grams / 1000
    height_mm = heights.at(s.measured_at)
    source = point.get("dataSource") if isinstance(point.get("dataSource"), Mapping) else {}
    row = {
        "id": s.point_id,
        "weight": kilograms,
        "bmi": kilograms / (height_mm / 1000) ** 2 if height_mm else None,
        "fat": _closest(body_fat, s.measured_at, BODY_FAT_MATCH_SECONDS),
        "record_date": s.civil_date,
        "record_time": s.civil_time,
        "measured_at": s.measured_at,
        "utc_offset": s.utc_offset,
        "platform": as_text(source, "platform"),
        "recording_method": as_text(source, "recordingMethod"),
        "data_point_name": s.name,
    }
    check_bounds("fitbit_weight", row)
    row["raw"] = checked_json(point)
    return row


def _closest(values: Mapping[dt.datetime, float], instant: dt.datetime, within_seconds: float) -> float | None:
    exact = values.get(instant)
    if exact is not None:
        return exact
    window = dt.timedelta(seconds=within_seconds)
    near = [(abs(at - instant), value) for at, value in values.items() if abs(at - instant) <= window]
    return min(near)[1] if near else None


def fitbit_weight_batch(records: Iterable[Any], heights: Iterable[tuple[dt.datetime, int]] = ()) -> TransformResult:
    """Rows for a landed weight batch: envelopes ``{"dataType": "weight"|"body-fat"|"height", "point": {...}}``.

    ``heights`` are (instant, millimetres) already known (from ``fitbit_height``); the batch's own
    height points join them for BMI and are returned as the companion ``fitbit_height``.
    """
    by_type: dict[str, list[Any]] = {"weight": [], "body-fat": [], "height": []}
    result = TransformResult()
    for record in records:
        data_type = record.get("dataType") if isinstance(record, Mapping) else None
        if data_type not in by_type:
            result.quarantined.append(quarantine_entry(record, "not a weight, body-fat or height envelope"))
            continue
        by_type[data_type].append(record.get("point"))
    new_heights = transform_batch(by_type["height"], fitbit_height_row, key=google_point_key)
    result.companions["fitbit_height"] = new_heights
    fat, fat_quarantined = body_fat_by_instant(by_type["body-fat"])
    result.quarantined += fat_quarantined
    history = HeightHistory.of([*heights, *((row["measured_at"], row["height_mm"]) for row in new_heights.rows)])
    weights = transform_batch(by_type["weight"], lambda point: fitbit_weight_row(point, fat, history),
                              key=google_point_key)
    result.rows += weights.rows
    result.quarantined += weights.quarantined
    return result


def fitbit_calories_row(rollup: Any) -> Row:
    """One ``fitbit_calories`` row from a dailyRollUp point (calories eaten on one civil date)."""
    if not isinstance(rollup, Mapping):
        raise RecordError(f"record must be a JSON object, got {type(rollup).__name__}")
    start = rollup.get("civilStartTime")
    day = civil_date(start.get("date") if isinstance(start, Mapping) else None, "civilStartTime.date")
    energy = (rollup.get("nutritionLog") or {}).get("energy") if isinstance(rollup.get("nutritionLog"), Mapping) \
        else None
    kcal = as_float(energy, "kcalSum") if isinstance(energy, Mapping) else None
    if kcal is None or kcal < 0:
        raise RecordError("nutritionLog.energy.kcalSum must be a non-negative number")
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    row = {"record_date": day, "id": int(midnight.timestamp()), "calories": kcal}
    check_bounds("fitbit_calories", row)
    return {**row, "raw": checked_json(rollup)}

"""Pure transforms: API JSON in, table rows out. No I/O, no Airflow.

A record that cannot be turned into a row raises :class:`RecordError` with a
reason a person can act on; :func:`transform_batch` collects those as
:class:`Rejected` records for the quarantine table so one bad record never sinks
its batch. Reasons name fields and types, never values (they hold personal data).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]

_BIGINT_MAX = 2**63 - 1
# str.isdigit() also accepts "²" and "١٧٨٠", which int() refuses or reads differently
_DIGITS = re.compile(r"[0-9]+")
_UPLOAD_ID_MAX = 10**30 - 1  # numeric(30, 0)


class RecordError(ValueError):
    """A record that cannot be loaded; the message is the quarantine reason."""


@dataclass(frozen=True)
class Rejected:
    """A record for the quarantine table."""

    record_key: str
    reason: str
    payload: str  # the record as JSON text


@dataclass
class TransformResult:
    rows: list[Row] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def transform_batch(records: Iterable[Any], transform: Callable[[Any], Row],
                    key: Callable[[Any], str] | None = None) -> TransformResult:
    """Apply ``transform`` to each record; bad records go to ``rejected`` with their reason.

    ``key`` gives a rejected record's quarantine key: it must equal the target's primary key as
    text, so that a quarantined record counts as present upstream (default :func:`record_key`).
    """
    result = TransformResult()
    for record in records:
        try:
            result.rows.append(transform(record))
        except RecordError as error:
            result.rejected.append(rejected(record, str(error), key))
        except (ValueError, OverflowError, TypeError, ArithmeticError) as error:
            # values no reader foresaw (a 5,000-digit number, the year 10**20): still one record, not the batch
            result.rejected.append(rejected(record, f"unreadable value ({type(error).__name__})", key))
    return result


def rejected(record: Any, reason: str, key: Callable[[Any], str] | None = None) -> Rejected:
    """A quarantine entry for ``record``; its key falls back to a hash when ``key`` cannot read one."""
    try:
        record_id = (key or record_key)(record)
        record_id.encode("utf-8")
    except (RecordError, ValueError, OverflowError, TypeError, AttributeError, KeyError, UnicodeEncodeError):
        record_id = _hash_key(record)
    return Rejected(record_id, reason, quarantine_json(record))


def record_key(record: Any) -> str:
    """The record's integer ``id`` as text when it has a readable one, else a stable hash."""
    if isinstance(record, Mapping):
        try:
            record_id = as_int(record, "id")
        except (RecordError, ValueError):
            record_id = None
        if record_id is not None:
            return str(record_id)
    return _hash_key(record)


def _hash_key(record: Any) -> str:
    return "sha256:" + hashlib.sha256(quarantine_json(record).encode("ascii")).hexdigest()


def dump_json(record: Any) -> str:
    """Compact JSON text of a record, as stored in ``raw``."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def quarantine_json(record: Any) -> str:
    """JSON text for the quarantine: ASCII, so even lone surrogates and NUL are stored (escaped)."""
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


def checked_json(record: Mapping[str, Any]) -> str:
    """JSON text of ``record`` that PostgreSQL's jsonb and text types will accept."""
    try:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise RecordError("contains NaN or Infinity, which JSON (and jsonb) does not allow") from None
    if _has_nul(record):
        raise RecordError("contains a NUL character (\\u0000), which PostgreSQL cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError("contains invalid Unicode (an unpaired surrogate)") from None
    return text


def _has_nul(value: Any) -> bool:
    """Whether any string (key or value) inside ``value`` holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


# --- field readers: each raises RecordError naming the field -------------------------------


def as_int(record: Mapping[str, Any], key: str, *, required: bool = False, maximum: int = _BIGINT_MAX) -> int | None:
    value = record.get(key)
    if value is None:
        if required:
            raise RecordError(f"{key} is missing")
        return None
    if isinstance(value, bool):
        raise RecordError(f"{key} must be an integer, got a boolean")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and len(value) < 40 and _DIGITS.fullmatch(value.strip()):
        value = int(value)
    if not isinstance(value, int):
        raise RecordError(f"{key} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise RecordError(f"{key} is out of range")
    return value


def as_float(record: Mapping[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{key} must be a number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise RecordError(f"{key} is out of range") from None
    if not math.isfinite(value):
        raise RecordError(f"{key} must be a finite number")
    return value


def as_seconds(record: Mapping[str, Any], key: str) -> int | None:
    value = as_float(record, key)
    if value is None:
        return None
    if not 0 <= value <= 2**31 - 1:
        raise RecordError(f"{key} is out of range")
    return round(value)


def as_text(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(f"{key} must be a string, got {type(value).__name__}")
    return value


def as_bool(record: Mapping[str, Any], key: str) -> bool | None:
    value = record.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise RecordError(f"{key} must be true or false, got {type(value).__name__}")


def as_utc_instant(record: Mapping[str, Any], key: str) -> dt.datetime:
    """An ISO 8601 instant with a zone (``Z`` or an offset), as an aware UTC datetime."""
    value = _parse_iso(record, key)
    if value.tzinfo is None:
        raise RecordError(f"{key} has no time zone")
    return value.astimezone(dt.UTC)


def as_wall_clock(record: Mapping[str, Any], key: str) -> dt.datetime | None:
    """A local wall-clock time as a naive datetime. Any zone suffix is dropped, not applied:
    Strava writes ``start_date_local`` with a ``Z`` although it is local time."""
    if record.get(key) is None:
        return None
    return _parse_iso(record, key).replace(tzinfo=None)


def _parse_iso(record: Mapping[str, Any], key: str) -> dt.datetime:
    value = record.get(key)
    if value is None:
        raise RecordError(f"{key} is missing")
    if not isinstance(value, str):
        raise RecordError(f"{key} must be an ISO 8601 string, got {type(value).__name__}")
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise RecordError(f"{key} is not an ISO 8601 date-time") from None


# --- Strava --------------------------------------------------------------------------------


def strava_activity_row(activity: Any) -> Row:
    """One ``strava_activity`` row from a Strava SummaryActivity (JSON object).

    Unknown ``sport_type`` values pass through; ``upload_id`` is read from
    ``upload_id_str`` when present (the integer can overflow BIGINT);
    ``start_date_local`` keeps the athlete's wall clock.
    """
    if not isinstance(activity, Mapping):
        raise RecordError(f"record must be a JSON object, got {type(activity).__name__}")
    athlete = activity.get("athlete")
    if athlete is not None and not isinstance(athlete, Mapping):
        raise RecordError("athlete must be an object")
    upload_key = "upload_id_str" if activity.get("upload_id_str") is not None else "upload_id"
    sport_type = as_text(activity, "sport_type")
    return {
        "id": as_int(activity, "id", required=True),
        "owner": as_int(athlete, "id") if athlete else None,
        "activity_type": as_text(activity, "type") or sport_type,
        "sport_type": sport_type or as_text(activity, "type"),
        "name": as_text(activity, "name"),
        "distance": as_float(activity, "distance"),
        "moving_time": as_seconds(activity, "moving_time"),
        "elapsed_time": as_seconds(activity, "elapsed_time"),
        "total_elevation_gain": as_float(activity, "total_elevation_gain"),
        "average_speed": as_float(activity, "average_speed"),
        "max_speed": as_float(activity, "max_speed"),
        "average_cadence": as_float(activity, "average_cadence"),
        "average_heartrate": as_float(activity, "average_heartrate"),
        "max_heartrate": as_float(activity, "max_heartrate"),
        "average_watts": as_float(activity, "average_watts"),
        "kilojoules": as_float(activity, "kilojoules"),
        "start_date": as_utc_instant(activity, "start_date"),
        "start_date_local": as_wall_clock(activity, "start_date_local"),
        "timezone": as_text(activity, "timezone"),
        "utc_offset": as_float(activity, "utc_offset"),
        "upload_id": as_int(activity, upload_key, maximum=_UPLOAD_ID_MAX),
        "external_id": as_text(activity, "external_id"),
        "device_name": as_text(activity, "device_name"),
        "gear_id": as_text(activity, "gear_id"),
        "manual": as_bool(activity, "manual"),
        "private": as_bool(activity, "private"),
        "visibility": as_text(activity, "visibility"),
        "trainer": as_bool(activity, "trainer"),
        "commute": as_bool(activity, "commute"),
        "workout_type": as_int(activity, "workout_type", maximum=2**31 - 1),
        "raw": checked_json(activity),  # last: a field's own, more precise reason comes first
    }


# --- Google Health API (Fitbit) ------------------------------------------------------------

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
    if len(tail) > 20 or not _DIGITS.fullmatch(tail) or int(tail) > _UINT64_MAX:
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
    return {"id": s.point_id, "height_mm": height_mm, "measured_at": s.measured_at, "data_point_name": s.name,
            "raw": checked_json(point)}


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


def body_fat_by_instant(points: Iterable[Any]) -> tuple[dict[dt.datetime, float], list[Rejected]]:
    """Body-fat percentages keyed by their instant; unreadable points are rejected."""
    result = transform_batch(points, _body_fat, key=lambda point: f"body-fat/{data_point_id(point)}")
    return {row["measured_at"]: row["percentage"] for row in result.rows}, result.rejected


def _body_fat(point: Any) -> Row:
    s = sample(point, "bodyFat")
    percentage = as_float(s.body, "percentage")
    if percentage is None or not 0 < percentage < 100:
        raise RecordError("bodyFat.percentage must be between 0 and 100")
    return {"measured_at": s.measured_at, "percentage": percentage}


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
    if grams is None or not 0 < grams < 1_000_000:
        raise RecordError("weightGrams must be between 0 and 1,000,000")
    kilograms = grams / 1000
    height_mm = heights.at(s.measured_at)
    source = point.get("dataSource") if isinstance(point.get("dataSource"), Mapping) else {}
    return {
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
        "raw": checked_json(point),
    }


def _closest(values: Mapping[dt.datetime, float], instant: dt.datetime, within_seconds: float) -> float | None:
    exact = values.get(instant)
    if exact is not None:
        return exact
    window = dt.timedelta(seconds=within_seconds)
    near = [(abs(at - instant), value) for at, value in values.items() if abs(at - instant) <= window]
    return min(near)[1] if near else None


def fitbit_weight_batch(records: Iterable[Any], heights: Iterable[tuple[dt.datetime, int]] = ()) -> TransformResult:
    """Rows for a landed weight batch: envelopes ``{"dataType": "weight"|"body-fat", "point": {...}}``.

    ``heights`` are (instant, millimetres) already known (from ``fitbit_height``).
    """
    by_type: dict[str, list[Any]] = {"weight": [], "body-fat": []}
    result = TransformResult()
    for record in records:
        data_type = record.get("dataType") if isinstance(record, Mapping) else None
        if data_type not in by_type:
            result.rejected.append(rejected(record, "not a weight or body-fat envelope"))
            continue
        by_type[data_type].append(record.get("point"))
    fat, rejected_fat = body_fat_by_instant(by_type["body-fat"])
    result.rejected += rejected_fat
    history = HeightHistory.of(heights)
    weights = transform_batch(by_type["weight"], lambda point: fitbit_weight_row(point, fat, history),
                              key=google_point_key)
    result.rows += weights.rows
    result.rejected += weights.rejected
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
    return {"record_date": day, "id": int(midnight.timestamp()), "calories": kcal, "raw": checked_json(rollup)}

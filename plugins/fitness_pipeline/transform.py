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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]

_BIGINT_MAX = 2**63 - 1
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


def transform_batch(records: Iterable[Any], transform: Callable[[Any], Row]) -> TransformResult:
    """Apply ``transform`` to each record; bad records go to ``rejected`` with their reason."""
    result = TransformResult()
    for record in records:
        try:
            result.rows.append(transform(record))
        except RecordError as error:
            result.rejected.append(Rejected(record_key(record), str(error), dump_json(record)))
    return result


def record_key(record: Any) -> str:
    """The record's id when it has a usable one, else a stable hash of its JSON."""
    if isinstance(record, Mapping):
        for key in ("id", "name"):
            value = record.get(key)
            if isinstance(value, (int, str)) and not isinstance(value, bool) and str(value):
                return str(value)
    return "sha256:" + hashlib.sha256(dump_json(record).encode("utf-8", "surrogatepass")).hexdigest()


def dump_json(record: Any) -> str:
    """Compact JSON text of a record, as stored in ``raw`` and the quarantine."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def checked_json(record: Mapping[str, Any]) -> str:
    """JSON text of ``record`` that PostgreSQL's jsonb and text types will accept."""
    text = dump_json(record)
    if "\\u0000" in text:
        raise RecordError("contains a NUL character (\\u0000), which PostgreSQL cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError("contains invalid Unicode (an unpaired surrogate)") from None
    return text


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
    if isinstance(value, str) and value.strip().isdigit():
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
    value = float(value)
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
    raw = checked_json(activity)
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
        "raw": raw,
    }

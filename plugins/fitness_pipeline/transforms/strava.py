"""Strava API v3 records to rows: a SummaryActivity to a ``strava_activity`` row, a DetailedActivity to what it
adds (``strava_activity_detail``, ``strava_gear``, ``strava_lap``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fitness_pipeline.transforms.bounds import check_bounds
from fitness_pipeline.transforms.fields import (
    RecordError,
    as_bool,
    as_float,
    as_int,
    as_seconds,
    as_text,
    as_utc_instant,
    as_wall_clock,
    checked_json,
)
from fitness_pipeline.transforms.records import Row

UPLOAD_ID_MAX = 10**30 - 1  # numeric(30, 0)


def strava_activity_row(activity: Any) -> Row:
    """One ``strava_activity`` row from a Strava SummaryActivity (JSON object).

    Unknown ``sport_type`` values pass through; ``upload_id`` is read from
    ``upload_id_str`` when present (the integer can overflow BIGINT);
    ``start_date_local`` keeps the athlete's wall clock. A value outside its plausibility bound
    (:data:`~fitness_pipeline.transforms.bounds.BOUNDS`) quarantines the record.
    """
    if not isinstance(activity, Mapping):
        raise RecordError(f"record must be a JSON object, got {type(activity).__name__}")
    athlete = activity.get("athlete")
    if athlete is not None and not isinstance(athlete, Mapping):
        raise RecordError("athlete must be an object")
    upload_key = "upload_id_str" if activity.get("upload_id_str") is not None else "upload_id"
    sport_type = as_text(activity, "sport_type")
    row = {
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
        "upload_id": as_int(activity, upload_key, maximum=UPLOAD_ID_MAX),
        "external_id": as_text(activity, "external_id"),
        "device_name": as_text(activity, "device_name"),
        "gear_id": as_text(activity, "gear_id"),
        "manual": as_bool(activity, "manual"),
        "private": as_bool(activity, "private"),
        "visibility": as_text(activity, "visibility"),
        "trainer": as_bool(activity, "trainer"),
        "commute": as_bool(activity, "commute"),
        "workout_type": as_int(activity, "workout_type", maximum=2**31 - 1),
    }
    check_bounds("strava_activity", row)
    row["raw"] = checked_json(activity)  # last: a field's own, more precise reason comes first
    return row


@dataclass(frozen=True)
class DetailRows:
    """What one DetailedActivity adds to its activity: one ``strava_activity_detail`` row, its gear (or None)
    and its laps."""

    activity_id: int
    detail: Row
    gear: Row | None
    laps: list[Row]


def strava_detail_rows(activity: Any) -> DetailRows:
    """The rows a Strava DetailedActivity (``GET /activities/{id}``) adds to its ``strava_activity`` row: its
    description, calories and device, its gear (the activity's ``gear`` summary) and its laps.

    A value outside its plausibility bound, or a lap that is not an object, quarantines the whole record
    (partial laps would look complete)."""
    if not isinstance(activity, Mapping):
        raise RecordError(f"record must be a JSON object, got {type(activity).__name__}")
    activity_id = as_int(activity, "id", required=True)
    gear = activity.get("gear")
    if gear is not None and not isinstance(gear, Mapping):
        raise RecordError("gear must be an object")
    laps = activity.get("laps") or []
    if not isinstance(laps, list) or not all(isinstance(lap, Mapping) for lap in laps):
        raise RecordError("laps must be a list of objects")
    gear_row = None
    if gear and gear.get("id") is not None:
        gear_row = {"id": as_text(gear, "id"), "name": as_text(gear, "name"), "distance": as_float(gear, "distance"),
                    "is_primary": as_bool(gear, "primary")}
        check_bounds("strava_gear", gear_row)
    lap_rows = [strava_lap_row(activity_id, position, lap) for position, lap in enumerate(laps, start=1)]
    detail = {
        "activity_id": activity_id,
        "description": as_text(activity, "description"),
        "calories": as_float(activity, "calories"),
        "device_name": as_text(activity, "device_name"),
        "gear_id": gear_row["id"] if gear_row else as_text(activity, "gear_id"),
        "lap_count": len(lap_rows),
    }
    check_bounds("strava_activity_detail", detail)
    return DetailRows(activity_id, detail, gear_row, lap_rows)


def strava_lap_row(activity_id: int, position: int, lap: Mapping[str, Any]) -> Row:
    """One ``strava_lap`` row; ``position`` (1-based) stands in for a missing ``lap_index``."""
    row = {
        "id": as_int(lap, "id", required=True),
        "activity_id": activity_id,
        "lap_index": as_int(lap, "lap_index", maximum=2**31 - 1) or position,
        "name": as_text(lap, "name"),
        "start_date": as_utc_instant(lap, "start_date") if lap.get("start_date") is not None else None,
        "start_date_local": as_wall_clock(lap, "start_date_local"),
        "elapsed_time": as_seconds(lap, "elapsed_time"),
        "moving_time": as_seconds(lap, "moving_time"),
        "distance": as_float(lap, "distance"),
        "total_elevation_gain": as_float(lap, "total_elevation_gain"),
        "average_speed": as_float(lap, "average_speed"),
        "max_speed": as_float(lap, "max_speed"),
        "average_heartrate": as_float(lap, "average_heartrate"),
        "max_heartrate": as_float(lap, "max_heartrate"),
        "average_cadence": as_float(lap, "average_cadence"),
        "average_watts": as_float(lap, "average_watts"),
    }
    check_bounds("strava_lap", row)
    return row

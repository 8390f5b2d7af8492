"""Deterministic synthetic Strava athlete.

Two modes:

* **Calendar mode** (default): every UTC calendar day's activities are decided by a
  ``Random`` seeded with ``(seed, day)`` and activity ids are derived from the day and
  the index within the day.  Two emulators started on different days therefore agree
  on every day they both cover.
* **Count mode** (``activities=N``): exactly N activities ending at the start of the
  current UTC hour, for benchmarks.  Only compact ``array`` indexes are kept; the
  JSON dicts are built for the page being served.

In both modes an activity's details come from a ``Random`` seeded with
``(seed, activity id)``, so :func:`build_activity` is a pure function.

Data traps deliberately included: names longer than 50 characters with accents,
CJK and emoji; missing heart-rate keys; manual activities without upload fields;
sport types no client can know in advance (``Padel``, ``Pickleball`` → type
``Workout``); ``start_date_local`` written with a misleading ``Z``; a trip to
Europe/Berlin spanning both DST changes of autumn 2025; ``only_me`` activities; and
exactly one activity with ``upload_id`` 987654321234567891234 (Strava's documented
example, which overflows a BIGINT).  The trip (Oct-Nov 2025) and the overflow upload
(May 2025) sit on fixed dates so that every emulator agrees on them; a calendar-mode
window that does not reach back to 2025 has neither.  In count mode the overflow
upload is the middle activity.

Other athletes of the same application (see :func:`athlete_seed` and
:func:`athlete_id_bases`) get their own data, seeded from ``(seed, athlete id)``, and
their own id range, so no two athletes ever share an activity id.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import threading
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

DEFAULT_ATHLETE_ID = 28416793
ID_BASE = 13_000_000_000  # above 2**31 on purpose: ids need BIGINT
IDS_PER_DAY = 10
LATE_ID_BASE = 19_000_000_000
# Other athletes: ids from EXTRA_ID_BASE on (above every id of the default athlete), one span per athlete id,
# generated ids in its lower half and late uploads in the upper half; MAX_ATHLETE_ID keeps them within BIGINT.
EXTRA_ID_BASE = 100_000_000_000
ATHLETE_ID_SPAN = 100_000_000
MAX_ATHLETE_ID = 10_000_000_000
MAX_ACTIVITIES = ATHLETE_ID_SPAN // 2
OVERFLOW_UPLOAD_ID = 987654321234567891234
EPOCH_DAY = date(1970, 1, 1)
SECONDS_PER_DAY = 86400

HOME_TZ = "America/Los_Angeles"
TRIP_TZ = "Europe/Berlin"
PLACES: dict[str, tuple[float, float, str, float]] = {
    # tz -> (lat, lng, country, base elevation m)
    HOME_TZ: (34.0195, -118.4912, "United States", 40.0),
    TRIP_TZ: (52.5200, 13.4050, "Germany", 35.0),
}


@dataclass(frozen=True)
class SportSpec:
    sport_type: str
    legacy_type: str  # the deprecated ``type`` field
    weight: float
    minutes: tuple[int, int]  # moving time range
    speed: tuple[float, float]  # average m/s; (0, 0) = no distance
    climb_per_km: tuple[float, float]
    cadence: tuple[float, float] | None
    heartrate: tuple[int, int]  # average bpm range
    gps: bool
    rides: bool = False
    indoor: bool = False


SPORTS: tuple[SportSpec, ...] = (
    SportSpec("Run", "Run", 26, (25, 75), (2.6, 3.8), (2, 15), (78, 92), (135, 165), True),
    SportSpec("TrailRun", "Run", 6, (40, 150), (1.9, 3.0), (20, 60), (74, 88), (140, 168), True),
    SportSpec("Ride", "Ride", 16, (45, 240), (6.0, 9.5), (5, 18), (78, 95), (125, 155), True, rides=True),
    SportSpec("GravelRide", "Ride", 5, (60, 240), (5.0, 7.5), (8, 20), (75, 90), (125, 150), True, rides=True),
    SportSpec(
        "VirtualRide",
        "VirtualRide",
        7,
        (30, 90),
        (8.0, 11.0),
        (5, 12),
        (80, 95),
        (130, 160),
        False,
        rides=True,
        indoor=True,
    ),
    SportSpec("Swim", "Swim", 7, (25, 60), (0.6, 0.95), (0, 0), None, (120, 150), False, indoor=True),
    SportSpec("Walk", "Walk", 10, (20, 90), (1.2, 1.6), (2, 10), (50, 60), (90, 115), True),
    SportSpec("Hike", "Hike", 5, (90, 300), (0.9, 1.4), (40, 120), (45, 55), (105, 135), True),
    SportSpec("WeightTraining", "WeightTraining", 8, (30, 70), (0, 0), (0, 0), None, (95, 125), False, indoor=True),
    SportSpec("Yoga", "Yoga", 4, (20, 75), (0, 0), (0, 0), None, (80, 105), False, indoor=True),
    # New sport types appear all the time; legacy ``type`` falls back to Workout.
    SportSpec("Padel", "Workout", 3, (60, 100), (0, 0), (0, 0), None, (125, 150), False),
    SportSpec("Pickleball", "Workout", 1, (45, 90), (0, 0), (0, 0), None, (115, 140), False),
)
SPORTS_BY_TYPE = {s.sport_type: s for s in SPORTS}
SPORT_WEIGHTS = [s.weight for s in SPORTS]
LEGACY_TYPE = {s.sport_type: s.legacy_type for s in SPORTS} | {"MountainBikeRide": "Ride", "EBikeRide": "EBikeRide"}

SPORT_NOUN = {
    "TrailRun": "Trail Run",
    "GravelRide": "Gravel Ride",
    "VirtualRide": "Virtual Ride",
    "WeightTraining": "Weight Training",
}
LONG_UNICODE_NAMES = (
    "Sonntagslauf entlang der Isar – müde Beine, aber glücklich 🏃‍♀️☀️ Kaiserschmarrn danach",
    "東京湾岸ロングライド：お台場から横浜まで、強い向かい風の中を最後まで走り切った日曜日の記録です🚴‍♂️🌊",
    "Course à pied matinale le long du canal Saint-Martin, café crème et croissant après ☕🥐",
    "Ñandú trail: subida épica al Cerro San Cristóbal con amigos — ¡qué vistas! 🏔️🇨🇱",
    "Интервальная тренировка на стадионе: 10×400 м, последние два были очень тяжёлыми 🔥",
    "🚴🚴🚴 Group ride w/ the crew — coffee stop at Zoë's Café, then hill repeats ×5 (ouch) 😅",
)
ODD_NAMES = (
    "Robert'); DROP TABLE activities;--",
    'Tempo "threshold" intervals\tthen cooldown',
    "Easy spin\nwith a line break",
    "Recovery 🧘",
    "5k PR!!! 🎉",
)
PLAIN_NAMES = ("Long Run", "Tempo Run", "Hill Repeats", "Easy miles", "Coffee Ride", "Sunset loop", "Intervals")
DEVICES_BY_KIND = {
    "run": ("Garmin Forerunner 965", "Apple Watch Series 9", "COROS PACE 3"),
    "ride": ("Garmin Edge 840", "Wahoo ELEMNT BOLT"),
    "virtual": ("Zwift",),
    "other": ("Garmin Forerunner 965", "Apple Watch Series 9", "Strava App"),
}
ZWIFT_ROUTES = ("Watopia's Waistband", "Volcano Circuit", "Tempus Fugit", "Road to Sky", "Greater London Loop")


class PlannedActivity(NamedTuple):
    """What the index needs to know about an activity before its details are built."""

    id: int
    start: int  # epoch seconds, UTC
    tz: str
    sport_type: str | None = None  # None: chosen by build_activity's own Random
    kind: str = ""  # "" normal, "overflow" (the huge upload_id), "upload" (never manual)


@dataclass(frozen=True)
class AthleteProfile:
    """Per-seed facts that do not depend on 'now': the trip and the overflow day."""

    trip_first_day: date
    trip_last_day: date
    overflow_day: date

    def tz_on(self, day: date) -> str:
        return TRIP_TZ if self.trip_first_day <= day <= self.trip_last_day else HOME_TZ

    def tz_at(self, epoch: int) -> str:
        return self.tz_on(utc_day(epoch))


@lru_cache(maxsize=64)
def athlete_profile(seed: int) -> AthleteProfile:
    # Anchored to fixed 2025 dates (not 'now') so every emulator agrees; the trip spans
    # Berlin's (Oct 26) and Los Angeles' (Nov 2) DST ends.
    rng = random.Random(f"{seed}:profile")
    first = date(2025, 10, 6) + timedelta(days=rng.randint(0, 7))
    last = first + timedelta(days=rng.randint(27, 34))
    overflow = date(2025, 5, 1) + timedelta(days=rng.randint(0, 30))
    return AthleteProfile(first, last, overflow)


def athlete_seed(seed: int, athlete_id: int) -> int:
    """The data seed of a non-default athlete: a pure function of the emulator seed and the athlete id."""
    digest = hashlib.blake2b(f"{seed}:athlete:{athlete_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def athlete_id_bases(athlete_id: int) -> tuple[int, int]:
    """(first generated id, first late-upload id) of a non-default athlete: disjoint from every other
    athlete's ids, the default athlete's included."""
    if not 1 <= athlete_id <= MAX_ATHLETE_ID:
        raise ValueError(f"athlete ids are 1..{MAX_ATHLETE_ID}")
    base = EXTRA_ID_BASE + athlete_id * ATHLETE_ID_SPAN
    return base, base + ATHLETE_ID_SPAN // 2


def utc_day(epoch: int) -> date:
    return EPOCH_DAY + timedelta(days=epoch // SECONDS_PER_DAY)


def day_number(day: date) -> int:
    return (day - EPOCH_DAY).days


def iso_z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(text: str) -> int:
    """ISO 8601 -> epoch seconds; a naive value is taken as UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def time_fields(start: int, tz_name: str) -> dict[str, Any]:
    """start_date, start_date_local (local wall clock, with Strava's misleading Z), timezone, utc_offset."""
    utc_moment = datetime.fromtimestamp(start, UTC)
    local = utc_moment.astimezone(ZoneInfo(tz_name))
    offset = local.utcoffset() or timedelta(0)
    # Strava's label shows the standard offset even during DST; utc_offset is the real one.
    standard = offset - (local.dst() or timedelta(0))
    return {
        "start_date": iso_z(utc_moment),
        "start_date_local": iso_z(local.replace(tzinfo=None)),
        "timezone": f"(GMT{_format_offset(standard)}) {tz_name}",
        "utc_offset": float(offset.total_seconds()),
    }


def _format_offset(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


# --------------------------------------------------------------------------- planning


@lru_cache(maxsize=8192)
def plan_day(seed: int, day_no: int, id_base: int = ID_BASE) -> tuple[PlannedActivity, ...]:
    """The activities of one UTC calendar day (pure function of seed, day and the athlete's id range)."""
    day = EPOCH_DAY + timedelta(days=day_no)
    rng = random.Random(f"{seed}:day:{day_no}")
    profile = athlete_profile(seed)
    tz_name = profile.tz_on(day)
    weekend = day.weekday() >= 5
    count = rng.choices((0, 1, 2), weights=(25, 60, 15) if weekend else (45, 47, 8))[0]
    if day == profile.overflow_day:
        count = max(count, 1)
    planned = []
    for index, minute in enumerate(_local_start_minutes(rng, count, weekend)):
        local = datetime.combine(day, time(minute // 60, minute % 60, rng.randint(0, 59)), ZoneInfo(tz_name))
        kind = "overflow" if day == profile.overflow_day and index == 0 else ""
        sport = rng.choices(SPORTS, weights=SPORT_WEIGHTS)[0].sport_type
        activity_id = id_base + day_no * IDS_PER_DAY + index
        planned.append(PlannedActivity(activity_id, int(local.timestamp()), tz_name, sport, kind))
    return tuple(planned)


def _local_start_minutes(rng: random.Random, count: int, weekend: bool) -> list[int]:
    if count == 0:
        return []
    if count == 2:  # morning and evening, so the two never overlap
        return [rng.randint(360, 540), rng.randint(1020, 1170)]
    if weekend:
        return [rng.randint(450, 660)]
    slot = rng.choices(((360, 510), (705, 780), (1020, 1170)), weights=(55, 10, 35))[0]
    return [rng.randint(*slot)]


def decode_day_id(
    activity_id: int, id_base: int = ID_BASE, late_id_base: int = LATE_ID_BASE
) -> tuple[int, int] | None:
    """(day number, index within the day) for a calendar-mode id, else None."""
    if activity_id < id_base or activity_id >= late_id_base:
        return None
    return divmod(activity_id - id_base, IDS_PER_DAY)


def count_mode_starts(seed: int, count: int, end: int, span_seconds: int) -> array:
    """Strictly increasing start times of ``count`` activities ending before ``end``."""
    rng = random.Random(f"{seed}:count:{count}")
    spacing = min(1.4 * SECONDS_PER_DAY, span_seconds / max(count, 1))
    starts = array("q")
    for i in range(count):
        starts.append(int(end - (count - i) * spacing + rng.random() * spacing * 0.8))
    return starts


# --------------------------------------------------------------------------- building


def build_activity(seed: int, athlete_id: int, plan: PlannedActivity) -> dict[str, Any]:
    """The SummaryActivity dict (resource_state 2) for a planned activity."""
    rng = random.Random(f"{seed}:activity:{plan.id}")
    spec = SPORTS_BY_TYPE.get(plan.sport_type or "") or rng.choices(SPORTS, weights=SPORT_WEIGHTS)[0]
    sport_type = plan.sport_type or spec.sport_type
    manual = plan.kind == "" and rng.random() < 0.04
    times = time_fields(plan.start, plan.tz)
    local_hour = int(times["start_date_local"][11:13])
    activity: dict[str, Any] = {
        "resource_state": 2,
        "athlete": {"id": athlete_id, "resource_state": 1},
        "name": _name(rng, spec, sport_type, local_hour),
        **_motion(rng, spec, manual),
        "type": LEGACY_TYPE.get(sport_type, "Workout"),
        "sport_type": sport_type,
        "workout_type": _workout_type(rng, spec),
        "id": plan.id,
        **times,
        "location_city": None,
        "location_state": None,
        "location_country": PLACES[plan.tz][2] if plan.tz in PLACES else None,
        **_social(rng),
        "map": {"id": f"a{plan.id}", "summary_polyline": "", "resource_state": 2},
        "trainer": spec.sport_type == "VirtualRide",
        "commute": spec.rides and not spec.indoor and rng.random() < 0.12,
        "manual": manual,
        **_visibility(rng),
        "flagged": rng.random() < 0.005,
        "gear_id": _gear(rng, spec),
    }
    if activity["commute"]:
        activity["name"] = "Commute"
    if not manual:
        activity.update(_recorded_fields(rng, spec, activity, plan))
    return activity


def _name(rng: random.Random, spec: SportSpec, sport_type: str, local_hour: int) -> str:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(LONG_UNICODE_NAMES)
    if roll < 0.08:
        return rng.choice(ODD_NAMES)
    if roll < 0.18:
        return rng.choice(PLAIN_NAMES)
    if sport_type == "VirtualRide":
        return f"Zwift - {rng.choice(ZWIFT_ROUTES)} in Watopia"
    part = (
        "Morning"
        if 5 <= local_hour < 11
        else "Lunch"
        if 11 <= local_hour < 14
        else "Afternoon"
        if 14 <= local_hour < 18
        else "Evening"
        if 18 <= local_hour < 22
        else "Night"
    )
    return f"{part} {SPORT_NOUN.get(sport_type, sport_type)}"


def _motion(rng: random.Random, spec: SportSpec, manual: bool) -> dict[str, Any]:
    moving = rng.randint(spec.minutes[0] * 60, spec.minutes[1] * 60)
    # Pauses: traffic lights outdoors, rest between lengths in the pool.
    pause_factor = 1.0 if manual else rng.uniform(1.0, 1.08 if spec.indoor else 1.3)
    speed = rng.uniform(*spec.speed) if spec.speed[1] else 0.0
    distance = round(speed * moving, 1)
    climb = 0.0 if not spec.gps and spec.sport_type != "VirtualRide" else rng.uniform(*spec.climb_per_km)
    max_factor = rng.uniform(1.5, 2.3) if spec.rides else rng.uniform(1.15, 1.8)
    return {
        "distance": distance,
        "moving_time": moving,
        "elapsed_time": int(moving * pause_factor) + (0 if manual else rng.randint(0, 120)),
        "total_elevation_gain": round(distance / 1000 * climb, 1),
        "average_speed": round(speed, 3),
        "max_speed": 0.0 if manual else round(speed * max_factor, 3),
    }


def _workout_type(rng: random.Random, spec: SportSpec) -> int | None:
    if spec.legacy_type == "Run":
        return rng.choices((0, 1, 2, 3), weights=(80, 3, 10, 7))[0]
    if spec.legacy_type == "Ride":
        return rng.choices((10, 11, 12), weights=(85, 3, 12))[0]
    return None


def _social(rng: random.Random) -> dict[str, Any]:
    achievements = rng.choices((0, 1, 2, 5, 12), weights=(60, 15, 12, 9, 4))[0]
    return {
        "achievement_count": achievements,
        "kudos_count": rng.randint(0, 40),
        "comment_count": rng.choices((0, 1, 3), weights=(80, 15, 5))[0],
        "athlete_count": rng.choices((1, 2, 6), weights=(80, 15, 5))[0],
        "photo_count": 0,
        "total_photo_count": rng.choices((0, 1, 4), weights=(75, 20, 5))[0],
        "pr_count": min(achievements, rng.randint(0, 3)),
        "has_kudoed": False,
    }


def _visibility(rng: random.Random) -> dict[str, Any]:
    visibility = rng.choices(("everyone", "followers_only", "only_me"), weights=(83, 11, 6))[0]
    return {"private": visibility == "only_me", "visibility": visibility}


def _gear(rng: random.Random, spec: SportSpec) -> str | None:
    if spec.legacy_type == "Run":
        return f"g{rng.choice((11873355, 13350201, 15522874))}"
    if spec.rides:
        return f"b{rng.choice((9876543, 10234511))}"
    return None


#: the names of the gear ids _gear hands out (a real athlete names their shoes and bikes)
GEAR_NAMES = {"g11873355": "Pegasus 40", "g13350201": "Speedgoat 5", "g15522874": "Endorphin Pro 3",
              "b9876543": "Canyon Ultimate", "b10234511": "Cube Nuroad"}
#: laps per activity at most (a lap per km of a run, per 5 km of anything else)
MAX_LAPS = 50


def detailed_activity(activity: dict[str, Any], *, athlete_id: int) -> dict[str, Any]:
    """The DetailedActivity (resource_state 3) of a SummaryActivity: its description, calories (from the work
    done with a power meter, else about 10 kcal a minute), the gear summary and laps, as ``GET /activities/{id}``
    answers. Deterministic: the same activity always gives the same detail (lap ids too)."""
    rng = random.Random(f"detail:{activity['id']}")
    kcal = float(activity.get("kilojoules") or 0) / 4.184 or float(activity.get("moving_time") or 0) / 6
    detail = {**activity, "resource_state": 3, "description": activity.get("description", ""),
              "calories": round(kcal, 1), "laps": _laps(rng, activity, athlete_id)}
    gear_id = activity.get("gear_id")
    if gear_id:
        detail["gear"] = {"id": gear_id, "primary": gear_id in ("g11873355", "b9876543"), "resource_state": 2,
                          "name": GEAR_NAMES.get(gear_id, "Gear"),
                          "distance": float(1_000_000 + int(hashlib.sha256(f"{athlete_id}:{gear_id}".encode())
                                                            .hexdigest()[:6], 16) % 3_000_000)}
    return detail


def _laps(rng: random.Random, activity: dict[str, Any], athlete_id: int) -> list[dict[str, Any]]:
    distance = float(activity.get("distance") or 0)
    moving, elapsed = int(activity.get("moving_time") or 0), int(activity.get("elapsed_time") or 0)
    unit = 1000.0 if activity.get("type") == "Run" else 5000.0
    count = max(1, min(MAX_LAPS, math.ceil(distance / unit))) if distance > 0 else 1
    start = datetime.fromisoformat(str(activity["start_date"]).replace("Z", "+00:00"))
    local = datetime.fromisoformat(str(activity["start_date_local"]).replace("Z", "+00:00"))
    laps, offset = [], 0
    for index in range(1, count + 1):
        share = (min(unit, distance - unit * (index - 1)) / distance) if distance > 0 else 1.0
        lap_moving, lap_elapsed = max(1, round(moving * share)), max(1, round(elapsed * share))
        lap_distance = round(distance * share, 1)
        lap = {"id": (int(activity["id"]) * 64 + index) % 2**63, "resource_state": 2, "name": f"Lap {index}",
               "activity": {"id": activity["id"], "resource_state": 1},
               "athlete": {"id": athlete_id, "resource_state": 1},
               "elapsed_time": lap_elapsed, "moving_time": lap_moving,
               "start_date": iso_z(start + timedelta(seconds=offset)),
               "start_date_local": iso_z(local.replace(tzinfo=UTC) + timedelta(seconds=offset)),
               "distance": lap_distance, "start_index": offset, "end_index": offset + lap_elapsed,
               "total_elevation_gain": round(float(activity.get("total_elevation_gain") or 0) * share, 1),
               "average_speed": round(lap_distance / lap_moving, 3),
               "max_speed": round(float(activity.get("max_speed") or 0) * rng.uniform(0.85, 1.0), 3),
               "lap_index": index, "split": index, "pace_zone": rng.randint(1, 5)}
        for key, spread in (("average_heartrate", 6.0), ("average_cadence", 4.0), ("average_watts", 20.0)):
            if activity.get(key) is not None:
                lap[key] = round(float(activity[key]) + rng.uniform(-spread, spread), 1)
        if activity.get("max_heartrate") is not None:
            lap["max_heartrate"] = float(activity["max_heartrate"]) - rng.randint(0, 8)
        if activity.get("average_watts") is not None:
            lap["device_watts"] = bool(activity.get("device_watts", True))
        laps.append(lap)
        offset += lap_elapsed
    return laps


def _recorded_fields(
    rng: random.Random, spec: SportSpec, activity: dict[str, Any], plan: PlannedActivity
) -> dict[str, Any]:
    """Fields only a device upload has: upload ids, device, sensors, GPS track."""
    kind = (
        "virtual"
        if spec.sport_type == "VirtualRide"
        else "ride"
        if spec.rides
        else ("run" if spec.legacy_type in ("Run", "Walk", "Hike") else "other")
    )
    device = rng.choice(DEVICES_BY_KIND[kind])
    upload_id = OVERFLOW_UPLOAD_ID if plan.kind == "overflow" else plan.id + 1_400_000_000 + rng.randint(0, 999)
    fields: dict[str, Any] = {
        "upload_id": upload_id,
        "upload_id_str": str(upload_id),
        "external_id": _external_id(rng, device),
        "device_name": device,
    }
    fields |= _sensor_fields(rng, spec, activity)
    if spec.gps:
        fields |= _track_fields(rng, activity, plan.tz)
    elif spec.sport_type == "VirtualRide":
        base = rng.uniform(5, 300)
        fields |= {"elev_low": round(base, 1), "elev_high": round(base + activity["total_elevation_gain"] * 0.6, 1)}
    return fields


def _external_id(rng: random.Random, device: str) -> str:
    if device == "Zwift":
        return f"zwift-activity-{rng.getrandbits(60)}.fit"
    if device.startswith("Garmin"):
        return f"garmin_ping_{rng.randint(10**11, 10**12)}"
    return f"{rng.getrandbits(128):032X}.fit"


def _sensor_fields(rng: random.Random, spec: SportSpec, activity: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if spec.cadence and rng.random() < 0.85:
        fields["average_cadence"] = round(rng.uniform(*spec.cadence), 1)
    if spec.rides:
        power_meter = spec.sport_type == "VirtualRide" or rng.random() < 0.5
        watts = round(rng.uniform(140, 240), 1)
        fields |= {"average_watts": watts, "kilojoules": round(watts * activity["moving_time"] / 1000, 1)}
        fields["device_watts"] = power_meter
        if power_meter:
            fields |= {"max_watts": int(watts * rng.uniform(2.2, 4.0)), "weighted_average_watts": int(watts * 1.06)}
    # No sensor: the keys are absent, not null.
    has_hr = rng.random() < 0.85
    fields["has_heartrate"] = has_hr
    if has_hr:
        average = round(rng.uniform(*spec.heartrate), 1)
        fields |= {"average_heartrate": average, "max_heartrate": float(min(198, int(average + rng.uniform(12, 35))))}
    fields["heartrate_opt_out"] = False
    fields["display_hide_heartrate_option"] = has_hr
    return fields


def _track_fields(rng: random.Random, activity: dict[str, Any], tz_name: str) -> dict[str, Any]:
    lat, lng, _, base_elevation = PLACES.get(tz_name, PLACES[HOME_TZ])
    lat += rng.uniform(-0.05, 0.05)
    lng += rng.uniform(-0.05, 0.05)
    radius_deg = max(activity["distance"], 300.0) / (2 * math.pi) / 111_000
    points = [
        (lat + radius_deg * math.sin(2 * math.pi * k / 12), lng + radius_deg * math.cos(2 * math.pi * k / 12))
        for k in range(13)
    ]
    low = base_elevation + rng.uniform(-20, 60)
    high = low + activity["total_elevation_gain"] * rng.uniform(0.3, 0.8)
    activity["map"]["summary_polyline"] = encode_polyline(points)
    return {
        "start_latlng": [round(points[0][0], 6), round(points[0][1], 6)],
        "end_latlng": [round(points[-1][0], 6), round(points[-1][1], 6)],
        "elev_high": round(high, 1),
        "elev_low": round(low, 1),
    }


def encode_polyline(points: list[tuple[float, float]]) -> str:
    """Google encoded polyline (precision 5), as Strava's summary_polyline."""
    out: list[str] = []
    prev_lat = prev_lng = 0
    for lat, lng in points:
        ilat, ilng = round(lat * 1e5), round(lng * 1e5)
        for delta in (ilat - prev_lat, ilng - prev_lng):
            value = ~(delta << 1) if delta < 0 else delta << 1
            while value >= 0x20:
                out.append(chr((0x20 | (value & 0x1F)) + 63))
                value >>= 5
            out.append(chr(value + 63))
        prev_lat, prev_lng = ilat, ilng
    return "".join(out)


# --------------------------------------------------------------------------- store


class ActivityStore:
    """The athlete's activities: a sorted (start, id) index plus edits.

    Generated activities are never materialised in bulk; ``get`` rebuilds one from
    its plan.  Late uploads and activities whose start time was edited are kept as
    full dicts.  All public methods are thread-safe (tests mutate from their thread
    while the server thread reads).  ``id_base``/``late_id_base``: where generated and
    late-uploaded ids start (another athlete's: :func:`athlete_id_bases`).
    """

    def __init__(
        self,
        *,
        seed: int,
        athlete_id: int,
        years: int,
        activities: int | None,
        clock: Callable[[], float],
        id_base: int = ID_BASE,
        late_id_base: int = LATE_ID_BASE,
    ) -> None:
        self.seed = seed
        self.athlete_id = athlete_id
        self._id_base = id_base
        self._late_id_base = late_id_base
        self._clock = clock
        self._lock = threading.RLock()
        self._starts = array("q")
        self._ids = array("q")
        self._added: dict[int, dict[str, Any]] = {}
        self._edits: dict[int, dict[str, Any]] = {}
        self._removed: set[int] = set()
        self._next_late_id = late_id_base
        self._count_starts: array | None = None
        now = int(clock())
        if activities is None:
            today = utc_day(now)
            self._first_day = day_number(_years_before(today, years))
            self._last_day = self._first_day - 1
            self._extend_days(day_number(today))
        else:
            self._build_count_mode(activities, now, years)

    # ---- construction

    def _extend_days(self, last_day: int) -> None:
        days = range(self._last_day + 1, last_day + 1)
        fresh = [(p.start, p.id) for d in days for p in plan_day(self.seed, d, self._id_base)]
        if fresh and (not self._starts or fresh[0][0] >= self._starts[-1]):
            for start, activity_id in sorted(fresh):
                self._starts.append(start)
                self._ids.append(activity_id)
        else:
            for start, activity_id in fresh:
                self._insert(start, activity_id)
        self._last_day = max(self._last_day, last_day)

    def _build_count_mode(self, count: int, now: int, years: int) -> None:
        end = now - now % 3600  # whole hour: emulators started within the hour agree
        self._count_starts = count_mode_starts(self.seed, count, end, years * 365 * SECONDS_PER_DAY)
        self._starts = array("q", self._count_starts)
        self._ids = array("q", range(self._id_base, self._id_base + count))

    # ---- index helpers

    def _insert(self, start: int, activity_id: int) -> None:
        pos = bisect.bisect_right(self._starts, start)
        self._starts.insert(pos, start)
        self._ids.insert(pos, activity_id)

    def _remove(self, start: int, activity_id: int) -> None:
        pos = bisect.bisect_left(self._starts, start)
        while pos < len(self._ids) and self._starts[pos] == start:
            if self._ids[pos] == activity_id:
                del self._starts[pos]
                del self._ids[pos]
                return
            pos += 1

    def _catch_up(self) -> int:
        """Extend calendar mode past midnight; returns 'now' (int epoch)."""
        now = int(self._clock())
        if self._count_starts is None and day_number(utc_day(now)) > self._last_day:
            self._extend_days(day_number(utc_day(now)))
        return now

    def _planned(self, activity_id: int) -> PlannedActivity | None:
        if self._count_starts is not None:
            index = activity_id - self._id_base
            if not 0 <= index < len(self._count_starts):
                return None
            start = self._count_starts[index]
            kind = "overflow" if index == len(self._count_starts) // 2 else ""
            return PlannedActivity(activity_id, start, athlete_profile(self.seed).tz_at(start), None, kind)
        decoded = decode_day_id(activity_id, self._id_base, self._late_id_base)
        if decoded is None or not self._first_day <= decoded[0] <= self._last_day:
            return None
        plans = plan_day(self.seed, decoded[0], self._id_base)
        return plans[decoded[1]] if decoded[1] < len(plans) else None

    def _get_unlocked(self, activity_id: int) -> dict[str, Any] | None:
        if activity_id in self._added:
            return _copy_activity(self._added[activity_id])
        if activity_id in self._removed:
            return None
        plan = self._planned(activity_id)
        if plan is None:
            return None
        activity = build_activity(self.seed, self.athlete_id, plan)
        activity.update(_copy_activity(self._edits.get(activity_id, {})))
        return activity

    # ---- queries

    def __len__(self) -> int:
        """Number of activities in the index, including any that start in the future."""
        with self._lock:
            return len(self._ids)

    def listed_count(self) -> int:
        """Number of activities a listing can return now (start in the past); cheap, builds nothing."""
        with self._lock:
            return bisect.bisect_right(self._starts, self._catch_up())

    def get(self, activity_id: int) -> dict[str, Any] | None:
        """The activity as the API would serve it (also if private or in the future)."""
        with self._lock:
            self._catch_up()
            return self._get_unlocked(activity_id)

    def page_ids(self, after: int | None, before: int | None, page: int, per_page: int) -> list[int]:
        """Ids of one listing page: after < start < before, start <= now.

        Ascending by start when ``after`` is given, else newest first (as Strava).
        Bisects the index, so deep pages cost the same as the first one.
        """
        with self._lock:
            now = self._catch_up()
            lo = 0 if after is None else bisect.bisect_right(self._starts, after)
            hi = bisect.bisect_right(self._starts, now)
            if before is not None:
                hi = min(hi, bisect.bisect_left(self._starts, before))
            offset = (page - 1) * per_page
            if after is not None:
                first = lo + offset
                return list(self._ids[first : max(first, min(first + per_page, hi))])
            top = hi - offset
            return list(reversed(self._ids[max(lo, top - per_page) : max(lo, top)]))

    def page(self, after: int | None, before: int | None, page: int, per_page: int) -> list[dict[str, Any]]:
        with self._lock:
            found = (self._get_unlocked(i) for i in self.page_ids(after, before, page, per_page))
            return [a for a in found if a is not None]

    def iter_listed(self) -> Iterator[dict[str, Any]]:
        """Every activity that a listing can return now (start in the past), oldest first."""
        with self._lock:
            now = self._catch_up()
            ids = list(self._ids[: bisect.bisect_right(self._starts, now)])
        for activity_id in ids:
            activity = self.get(activity_id)
            if activity is not None:
                yield activity

    def find_activity(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """First listed activity (oldest first) matching ``predicate``; None if none does."""
        return next((a for a in self.iter_listed() if predicate(a)), None)

    def find_activities(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """All listed activities matching ``predicate``, oldest first (builds every dict)."""
        return [a for a in self.iter_listed() if predicate(a)]

    # ---- mutations

    def add(
        self,
        start: int,
        *,
        sport_type: str | None = None,
        name: str | None = None,
        activity_id: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Add an activity 'uploaded late' (its start may be long ago); returns it."""
        with self._lock:
            self._catch_up()
            if activity_id is None:
                activity_id = self._fresh_late_id()
            else:
                self.delete(activity_id)
            plan = PlannedActivity(activity_id, start, athlete_profile(self.seed).tz_at(start), sport_type, "upload")
            activity = build_activity(self.seed, self.athlete_id, plan)
            if sport_type is not None:
                activity["type"] = LEGACY_TYPE.get(sport_type, "Workout")
            if name is not None:
                activity["name"] = name
            _apply_edit(activity, extra or {})
            self._added[activity_id] = activity
            self._insert(start, activity_id)
            return _copy_activity(activity)

    def update(self, activity_id: int, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Edit fields (e.g. name, visibility, start_date); None if the id is unknown."""
        with self._lock:
            current = self.get(activity_id)
            if current is None:
                return None
            if "start_date" not in changes and activity_id not in self._added:
                self._edits.setdefault(activity_id, {}).update(_copy_activity(changes))
                if "visibility" in changes and "private" not in changes:
                    self._edits[activity_id]["private"] = changes["visibility"] == "only_me"
                return self.get(activity_id)
            old_start = parse_iso_utc(current["start_date"])
            _apply_edit(current, changes)
            self._remove(old_start, activity_id)
            self._insert(parse_iso_utc(current["start_date"]), activity_id)
            self._added[activity_id] = current
            self._edits.pop(activity_id, None)
            return _copy_activity(current)

    def delete(self, activity_id: int) -> bool:
        """Remove an activity: it vanishes from listings (no tombstone)."""
        with self._lock:
            current = self.get(activity_id)
            if current is None:
                return False
            self._remove(parse_iso_utc(current["start_date"]), activity_id)
            self._added.pop(activity_id, None)
            self._edits.pop(activity_id, None)
            self._removed.add(activity_id)
            return True

    def _fresh_late_id(self) -> int:
        while self._next_late_id in self._added:
            self._next_late_id += 1
        self._next_late_id += 1
        return self._next_late_id - 1


def _apply_edit(activity: dict[str, Any], changes: dict[str, Any]) -> None:
    activity.update(_copy_activity(changes))
    if "start_date" in changes:
        start = parse_iso_utc(str(changes["start_date"]))
        tz_name = str(activity.get("timezone", "")).split(" ")[-1] or HOME_TZ
        activity.update(time_fields(start, tz_name if tz_name in PLACES else HOME_TZ))
    if "visibility" in changes and "private" not in changes:
        activity["private"] = changes["visibility"] == "only_me"


def _copy_activity(activity: dict[str, Any]) -> dict[str, Any]:
    # Nested dicts (athlete, map) must not be shared with callers who may mutate them.
    return {k: dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v for k, v in activity.items()}


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)

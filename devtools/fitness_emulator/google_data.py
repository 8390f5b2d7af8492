"""Deterministic synthetic Google Health (ex-Fitbit) data for the Strava athlete.

Every *civil* day (the athlete's local calendar day) is decided by a ``Random``
seeded with ``(seed, day)``, and point ids are hashes of ``(seed, day, slot)``, so two
emulators started on different days agree on every day they both cover (as on the
Strava side).  Points are kept as small :class:`Point` tuples; the JSON dicts are
built only for the page being served.  ``years=5`` is ~1.2k weights, ~0.8k body-fat
points and ~6k nutrition logs.

Data traps deliberately included:

* ids are unsigned 64-bit numbers; about half of them exceed ``2**63 - 1``;
* body fat is a separate data type whose points share the *same* ``physicalTime``
  as scale weigh-ins (about three quarters of them); manual weights have none;
* weights come from several sources (FITBIT scale ``PASSIVELY_MEASURED`` /
  ``ACTIVELY_MEASURED``, FITBIT app ``MANUAL``, Health Connect ``MANUAL``; the latter
  typed in pounds, hence odd gram values);
* time zones: America/Los_Angeles (``-25200s``/``-28800s``) at home, Europe/Berlin
  during the Strava side's autumn-2025 trip and Asia/Tokyo for a few weeks in spring
  2026.  Late-evening LA weigh-ins and dinners fall on the next UTC day, Tokyo
  morning weigh-ins on the previous one;
* nutrition logs on most days, none at all on some (roll-ups omit those days); a
  late snack may end on the next civil day; Japanese/German food names;
* height: one point at account setup (early 2024) and a later small correction
  (mid 2025), both on fixed dates and listed even when they are older than the
  ``years`` window; the latest height may therefore be far older than any sync
  window;
* ``civilTime.time`` follows proto3 JSON: zero fields (e.g. ``seconds: 0``) are
  omitted.

Other users of the same client get their own data from :func:`user_seed` (seed and user
id); their point ids are hashes of that seed, so they do not collide with anyone's.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import math
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from fitness_emulator.strava_data import EPOCH_DAY, HOME_TZ, SECONDS_PER_DAY, athlete_profile, day_number, utc_day

DATA_TYPES = ("weight", "body-fat", "height", "nutrition-log")
TOKYO_TZ = "Asia/Tokyo"
INT64_MAX = 2**63 - 1
POUND_GRAMS = 453.59237
MEAL_TYPES = ("BREAKFAST", "LUNCH", "DINNER", "SNACK")

# (recordingMethod, platform, device, application)
SCALE = {"displayName": "Aria Air", "manufacturer": "Fitbit", "formFactor": "SCALE"}
PIXEL = {"displayName": "Pixel 9", "manufacturer": "Google", "formFactor": "PHONE"}
GALAXY = {"displayName": "Galaxy S24", "manufacturer": "Samsung", "formFactor": "PHONE"}
FITBIT_APP = {"packageName": "com.fitbit.FitbitMobile", "displayName": "Fitbit"}
SAMSUNG_HEALTH = {"packageName": "com.sec.android.app.shealth", "displayName": "Samsung Health"}
MFP = {"packageName": "com.myfitnesspal.android", "displayName": "MyFitnessPal"}
SOURCES: tuple[tuple[str, str, dict[str, str], dict[str, str]], ...] = (
    ("PASSIVELY_MEASURED", "FITBIT", SCALE, FITBIT_APP),  # 0: scale, auto sync
    ("ACTIVELY_MEASURED", "FITBIT", SCALE, FITBIT_APP),  # 1: scale, user-started
    ("MANUAL", "FITBIT", PIXEL, FITBIT_APP),  # 2: typed into the Fitbit app
    ("MANUAL", "HEALTH_CONNECT", GALAXY, SAMSUNG_HEALTH),  # 3: typed into Samsung Health
    ("MANUAL", "HEALTH_CONNECT", GALAXY, MFP),  # 4: food diary app
)
SOURCE_SCALE_PASSIVE, SOURCE_SCALE_ACTIVE, SOURCE_FITBIT_MANUAL, SOURCE_HC_MANUAL, SOURCE_MFP = range(5)
SOURCE_NAMES = {
    ("PASSIVELY_MEASURED", "FITBIT"): SOURCE_SCALE_PASSIVE,
    ("ACTIVELY_MEASURED", "FITBIT"): SOURCE_SCALE_ACTIVE,
    ("MANUAL", "FITBIT"): SOURCE_FITBIT_MANUAL,
    ("MANUAL", "HEALTH_CONNECT"): SOURCE_HC_MANUAL,
}

FOODS: dict[str, dict[str, tuple[str, ...]]] = {
    "home": {
        "BREAKFAST": ("Oatmeal with blueberries", "Greek yogurt & granola", "Avocado toast, 2 eggs", "Bagel"),
        "LUNCH": ("Chicken burrito bowl", "Turkey sandwich", "Poke bowl", "Caesar salad with salmon"),
        "DINNER": ("Salmon, rice & broccoli", "Spaghetti bolognese", "Tacos al pastor (3)", "Chicken stir-fry"),
        "SNACK": ("Protein bar", "Apple & peanut butter", "Trail mix", "Dark chocolate 70%"),
    },
    TOKYO_TZ: {
        "BREAKFAST": ("鮭おにぎり (2)", "Hotel breakfast buffet", "たまごサンド"),
        "LUNCH": ("ラーメン 🍜", "カツカレー", "Soba with tempura"),
        "DINNER": ("焼き鳥 盛り合わせ", "Sushi omakase 🍣", "Okonomiyaki"),
        "SNACK": ("抹茶アイス", "Onigiri (konbini)", "Melon pan"),
    },
    "Europe/Berlin": {
        "BREAKFAST": ("Brötchen mit Käse", "Müsli mit Joghurt"),
        "LUNCH": ("Currywurst mit Pommes", "Döner Kebab"),
        "DINNER": ("Schnitzel mit Kartoffelsalat", "Käsespätzle"),
        "SNACK": ("Brezel", "Apfelstrudel"),
    },
}
KCAL = {"BREAKFAST": (320, 720), "LUNCH": (480, 920), "DINNER": (600, 1150), "SNACK": (90, 380)}


class Point(NamedTuple):
    """One data point; ``time`` is the physical instant (interval start for nutrition logs)."""

    id: int
    data_type: str
    time: int  # epoch seconds, UTC
    offset: int  # UTC offset in seconds at ``time``
    value: float  # grams | percent | millimetres | kcal
    source: int  # index into SOURCES
    end: int = 0  # nutrition-log: interval end (epoch seconds)
    end_offset: int = 0
    meal: str = ""
    food: str = ""

    @property
    def civil_day(self) -> int:
        """Day number of the local (civil) date at ``time``."""
        return (self.time + self.offset) // SECONDS_PER_DAY

    @property
    def utc_day(self) -> int:
        return self.time // SECONDS_PER_DAY


@dataclass(frozen=True)
class HealthProfile:
    """Per-seed facts that do not depend on 'now': trips, heights, weight-curve phases."""

    tokyo_first: date
    tokyo_last: date
    berlin_first: date
    berlin_last: date
    heights: tuple[tuple[datetime, int, int], ...]  # (local wall clock in HOME_TZ, millimetres, source)
    phases: tuple[float, float, float]

    def tz_on(self, day: date) -> str:
        if self.tokyo_first <= day <= self.tokyo_last:
            return TOKYO_TZ
        if self.berlin_first <= day <= self.berlin_last:
            return "Europe/Berlin"  # the Strava side's trip: same athlete
        return HOME_TZ


@lru_cache(maxsize=64)
def health_profile(seed: int) -> HealthProfile:
    rng = random.Random(f"{seed}:google:profile")
    strava = athlete_profile(seed)
    tokyo_first = date(2026, 3, 2) + timedelta(days=rng.randint(0, 12))
    tokyo_last = tokyo_first + timedelta(days=rng.randint(16, 23))
    setup = datetime.combine(date(2024, 1, 3) + timedelta(days=rng.randint(0, 20)), time(20, rng.randint(0, 59), 5))
    correction = datetime.combine(
        date(2025, 6, 2) + timedelta(days=rng.randint(0, 25)), time(9, rng.randint(0, 59), 41)
    )
    tall = 1780 + rng.randint(-30, 30)
    heights = ((setup, tall, SOURCE_FITBIT_MANUAL), (correction, tall - 4, SOURCE_HC_MANUAL))
    phases = (rng.uniform(0, math.tau), rng.uniform(0, math.tau), rng.uniform(0, math.tau))
    return HealthProfile(tokyo_first, tokyo_last, strava.trip_first_day, strava.trip_last_day, heights, phases)


def user_seed(seed: int, user_id: str) -> int:
    """The data seed of a non-default user: a pure function of the emulator seed and the user id."""
    digest = hashlib.blake2b(f"{seed}:google:user:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def legacy_user_id(seed: int, user_id: str) -> str:
    """A stable six-character legacy (Fitbit) user id for a non-default user."""
    digest = hashlib.blake2b(f"{seed}:google:legacy:{user_id}".encode(), digest_size=5).digest()
    return base64.b32encode(digest).decode()[:6]


def point_id(seed: int, tag: str) -> int:
    """A stable unsigned 64-bit id (roughly half are above 2**63 - 1)."""
    digest = hashlib.blake2b(f"{seed}:google:{tag}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


def trend_grams(seed: int, day_no: int) -> float:
    """Smooth weight curve (a function of the absolute day, not of 'now')."""
    p1, p2, p3 = health_profile(seed).phases
    return (
        87_500
        + 2_600 * math.sin(math.tau * day_no / 611 + p1)
        + 900 * math.sin(math.tau * day_no / 83 + p2)
        + 500 * math.sin(math.tau * day_no / 365.25 + p3)
    )


def _instant(day: date, minute_of_day: int, second: int, tz_name: str) -> tuple[int, int]:
    """(epoch seconds, UTC offset seconds) of a local wall-clock time; minutes may pass midnight."""
    local_naive = datetime.combine(day, time(0, 0)) + timedelta(minutes=minute_of_day, seconds=second)
    local = local_naive.replace(tzinfo=ZoneInfo(tz_name))
    offset = local.utcoffset() or timedelta(0)
    return int(local.timestamp()), int(offset.total_seconds())


def offset_at(epoch: int, tz_name: str) -> int:
    offset = datetime.fromtimestamp(epoch, UTC).astimezone(ZoneInfo(tz_name)).utcoffset() or timedelta(0)
    return int(offset.total_seconds())


# --------------------------------------------------------------------------- planning


@lru_cache(maxsize=4096)
def plan_day(seed: int, day_no: int) -> tuple[Point, ...]:
    """Every point whose civil (local) date is ``day_no``: a pure function of seed and day."""
    day = EPOCH_DAY + timedelta(days=day_no)
    rng = random.Random(f"{seed}:google:day:{day_no}")
    tz_name = health_profile(seed).tz_on(day)
    home = tz_name == HOME_TZ
    points: list[Point] = []

    def tag(slot: str) -> str:
        return f"{day_no}:{slot}"

    def weigh(slot: str, minute: int, source: int, extra_grams: float = 0.0, body_fat: bool = False) -> None:
        at, offset = _instant(day, minute, rng.randint(0, 59), tz_name)
        grams = trend_grams(seed, day_no) + extra_grams + rng.gauss(0, 350)
        if source == SOURCE_HC_MANUAL:  # typed in pounds with one decimal
            value = round(round(grams / POUND_GRAMS, 1) * POUND_GRAMS)
        elif source == SOURCE_FITBIT_MANUAL:  # typed in kg with one decimal
            value = round(grams, -2)
        else:
            value = round(grams)
        points.append(Point(point_id(seed, tag(slot)), "weight", at, offset, int(value), source))
        if body_fat:
            percent = 20.5 + (grams - 87_500) / 1000 * 0.6 + rng.gauss(0, 0.5)
            points.append(Point(point_id(seed, tag(slot + ":fat")), "body-fat", at, offset, round(percent, 1), source))

    # Weigh-ins: the scale lives at home; on trips only the odd manual entry.
    if home:
        if rng.random() < 0.55:
            source = SOURCE_SCALE_PASSIVE if rng.random() < 0.8 else SOURCE_SCALE_ACTIVE
            weigh("am", rng.randint(345, 510), source, body_fat=rng.random() < 0.75)
        if rng.random() < 0.07:  # late evening: next UTC day in Los Angeles
            weigh("pm", rng.randint(1230, 1435), SOURCE_SCALE_PASSIVE, extra_grams=700, body_fat=rng.random() < 0.6)
        if rng.random() < 0.05:
            weigh("manual", rng.randint(540, 1320), rng.choice((SOURCE_FITBIT_MANUAL, SOURCE_HC_MANUAL)), 300)
    elif rng.random() < 0.4:  # Tokyo mornings: previous UTC day
        weigh("trip", rng.randint(375, 525), SOURCE_HC_MANUAL, extra_grams=-200)

    # Nutrition: several logs on most days, none on some.
    if rng.random() >= (0.1 if home else 0.3):
        foods = FOODS.get(tz_name, FOODS["home"])
        meals: list[tuple[str, int, int]] = []  # (meal type, start minute, duration minutes)
        if rng.random() < 0.8:
            meals.append(("BREAKFAST", rng.randint(390, 570), rng.randint(10, 25)))
        if rng.random() < 0.85:
            meals.append(("LUNCH", rng.randint(690, 825), rng.randint(20, 45)))
        if rng.random() < 0.9 or not meals:
            meals.append(("DINNER", rng.randint(1065, 1275), rng.randint(25, 60)))
        for _ in range(rng.choices((0, 1, 2), weights=(45, 40, 15))[0]):
            start = rng.randint(900, 1005) if rng.random() < 0.6 else rng.randint(1290, 1430)
            meals.append(("SNACK", start, rng.randint(5, 25)))  # a late snack may end after midnight
        for index, (meal, start_minute, minutes) in enumerate(meals):
            start, offset = _instant(day, start_minute, rng.randint(0, 59), tz_name)
            end = start + minutes * 60
            low, high = KCAL[meal]
            kcal = round(rng.uniform(low, high) * 2) / 2
            source = SOURCE_MFP if rng.random() < 0.3 else SOURCE_FITBIT_MANUAL
            points.append(
                Point(
                    point_id(seed, tag(f"meal{index}")),
                    "nutrition-log",
                    start,
                    offset,
                    kcal,
                    source,
                    end,
                    offset_at(end, tz_name),
                    meal,
                    rng.choice(foods[meal]),
                )
            )
    return tuple(points)


def height_points(seed: int) -> tuple[Point, ...]:
    points = []
    for index, (local, millimetres, source) in enumerate(health_profile(seed).heights):
        at, offset = _instant(local.date(), local.hour * 60 + local.minute, local.second, HOME_TZ)
        points.append(Point(point_id(seed, f"height:{index}"), "height", at, offset, millimetres, source))
    return tuple(points)


# --------------------------------------------------------------------------- JSON


def duration(seconds: int) -> str:
    return f"{seconds}s"


def civil_json(epoch: int, offset: int) -> dict[str, Any]:
    local = datetime.fromtimestamp(epoch + offset, UTC)
    clock = {"hours": local.hour, "minutes": local.minute, "seconds": local.second}
    return {
        "date": {"year": local.year, "month": local.month, "day": local.day},
        # proto3 JSON (google.type.TimeOfDay): zero fields are left out.
        "time": {k: v for k, v in clock.items() if v},
    }


def iso_z(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sample_time(point: Point) -> dict[str, Any]:
    return {
        "physicalTime": iso_z(point.time),
        "utcOffset": duration(point.offset),
        "civilTime": civil_json(point.time, point.offset),
    }


def point_json(point: Point, health_user_id: str) -> dict[str, Any]:
    method, platform, device, application = SOURCES[point.source]
    item: dict[str, Any] = {
        "name": f"users/{health_user_id}/dataTypes/{point.data_type}/dataPoints/{point.id}",
        "dataSource": {
            "recordingMethod": method,
            "platform": platform,
            "device": dict(device),
            "application": dict(application),
        },
    }
    if point.data_type == "weight":
        item["weight"] = {"sampleTime": sample_time(point), "weightGrams": int(point.value)}
    elif point.data_type == "body-fat":
        item["bodyFat"] = {"sampleTime": sample_time(point), "percentage": float(point.value)}
    elif point.data_type == "height":
        item["height"] = {"sampleTime": sample_time(point), "heightMillimeters": str(int(point.value))}
    else:
        item["nutritionLog"] = {
            "interval": {
                "startTime": iso_z(point.time),
                "startUtcOffset": duration(point.offset),
                "endTime": iso_z(point.end),
                "endUtcOffset": duration(point.end_offset),
                "civilStartTime": civil_json(point.time, point.offset),
                "civilEndTime": civil_json(point.end, point.end_offset),
            },
            "energy": {"kcal": float(point.value)},
            "mealType": point.meal,
            "foodDisplayName": point.food,
        }
    return item


def date_json(day_no: int) -> dict[str, int]:
    day = EPOCH_DAY + timedelta(days=day_no)
    return {"year": day.year, "month": day.month, "day": day.day}


# --------------------------------------------------------------------------- store


@dataclass(frozen=True)
class Bounds:
    """A closed-open range: physical epoch seconds, or civil day numbers (nutrition-log)."""

    lower: float | None = None
    upper: float | None = None
    civil: bool = False

    def key(self) -> str:
        return f"{self.civil}:{self.lower}:{self.upper}"


class HealthStore:
    """The user's data points: per data type a sorted ``(time, id)`` index plus the points.

    Days are generated up to 'tomorrow' (UTC) and extended when the clock passes
    midnight; listings only show points whose instant is not in the future.  All
    public methods are thread-safe.
    """

    def __init__(self, *, seed: int, years: int, clock: Callable[[], float]) -> None:
        self.seed = seed
        self._clock = clock
        self._lock = threading.RLock()
        self._index: dict[str, list[tuple[int, int]]] = {t: [] for t in DATA_TYPES}
        self._points: dict[int, Point] = {}
        self._removed: set[int] = set()
        self._added = 0
        today = utc_day(int(clock()))
        self._first_day = day_number(_years_before(today, years))
        self._last_day = self._first_day - 1
        for point in height_points(seed):
            self._insert(point)
        self._extend(day_number(today) + 1)

    # ---- construction

    def _extend(self, last_day: int) -> None:
        for day_no in range(self._last_day + 1, last_day + 1):
            for point in plan_day(self.seed, day_no):
                if point.id not in self._removed:
                    self._insert(point)
        self._last_day = max(self._last_day, last_day)

    def _insert(self, point: Point) -> None:
        self._points[point.id] = point
        bisect.insort(self._index[point.data_type], (point.time, point.id))

    def _catch_up(self) -> int:
        now = int(self._clock())
        if day_number(utc_day(now)) + 1 > self._last_day:
            self._extend(day_number(utc_day(now)) + 1)
        return now

    # ---- queries

    def listed(self, data_type: str, bounds: Bounds | None = None) -> list[Point]:
        """Points visible now (not in the future) within ``bounds``, newest first."""
        with self._lock:
            now = self._catch_up()
            index = self._index[data_type]
            hi = bisect.bisect_right(index, (now, 2**64))
            lo = 0
            if bounds is not None and not bounds.civil:
                if bounds.lower is not None:
                    lo = bisect.bisect_left(index, (math.ceil(bounds.lower), -1))
                if bounds.upper is not None:
                    hi = min(hi, bisect.bisect_left(index, (math.ceil(bounds.upper), -1)))
            found = [self._points[point_id] for _, point_id in reversed(index[lo:hi])] if lo < hi else []
        if bounds is not None and bounds.civil:
            found = [
                p
                for p in found
                if (bounds.lower is None or p.civil_day >= bounds.lower)
                and (bounds.upper is None or p.civil_day < bounds.upper)
            ]
        return found

    def iter_listed(self, data_type: str) -> Iterator[Point]:
        """Every visible point of a type, oldest first."""
        return reversed(self.listed(data_type))

    def get(self, point_id: int) -> Point | None:
        with self._lock:
            return self._points.get(point_id)

    def daily_kcal(self, first_day: int, end_day: int) -> dict[int, float]:
        """kcal per civil day (of the interval start) in [first_day, end_day); days without logs absent."""
        sums: dict[int, float] = {}
        for point in self.listed("nutrition-log", Bounds(first_day, end_day, civil=True)):
            sums[point.civil_day] = sums.get(point.civil_day, 0.0) + point.value
        return sums

    # ---- mutations

    def add(self, point: Point) -> Point:
        with self._lock:
            self._removed.discard(point.id)
            self.delete(point.id)
            self._insert(point)
            return point

    def new_id(self) -> int:
        with self._lock:
            while True:
                self._added += 1
                candidate = point_id(self.seed, f"added:{self._added}")
                if candidate not in self._points:
                    return candidate

    def delete(self, point_id: int, data_type: str | None = None) -> bool:
        """Remove a point: it simply stops being listed (no tombstone)."""
        with self._lock:
            point = self._points.get(point_id)
            if point is None or (data_type is not None and point.data_type != data_type):
                return False
            del self._points[point_id]
            index = self._index[point.data_type]
            pos = bisect.bisect_left(index, (point.time, point.id))
            if pos < len(index) and index[pos] == (point.time, point.id):
                del index[pos]
            self._removed.add(point_id)
            return True

    def counts(self) -> dict[str, int]:
        return {t: len(self.listed(t)) for t in DATA_TYPES}


def make_weight(
    store: HealthStore,
    *,
    epoch: int,
    offset: int,
    grams: int,
    body_fat: float | None = None,
    source: int = SOURCE_SCALE_PASSIVE,
) -> list[Point]:
    """A weight point (and a body-fat point at the same instant) for the control API."""
    weight = Point(store.new_id(), "weight", epoch, offset, int(grams), source)
    points = [store.add(weight)]
    if body_fat is not None:
        points.append(store.add(Point(store.new_id(), "body-fat", epoch, offset, round(float(body_fat), 1), source)))
    return points


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)

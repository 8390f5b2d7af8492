"""What the training page shows, read from the views of :mod:`fitness_pipeline.views` with SQLAlchemy Core.

Every function here takes a DB-API cursor (the caller opens the read-only transaction, see
:func:`read_only`) and plain, already validated values (dates, bounded week counts; see
:func:`parse_month`, :func:`parse_date`, :func:`parse_weeks`), and returns JSON-ready dicts: dates as
ISO strings, numbers as floats or ints, ``None`` for what is not there (a day without a nutrition log
has ``kcal: None``, never 0). Aggregation happens in SQL (the views, window functions); Python only
lays the rows out by week and day.

No FastAPI here: this module imports on Airflow 2.11 too (the plugins manager imports every file).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from fitness_pipeline import schema, views
from fitness_pipeline.db import FITNESS_DB_CONN_ID, execute

#: every statement of a request is cancelled after this long (the database enforces it)
STATEMENT_TIMEOUT = "2s"
#: a request waits at most this long for a lock (ensure_schema replacing a view holds one)
LOCK_TIMEOUT = "1s"

#: the calendar's and the trends' week counts
MAX_CALENDAR_WEEKS = 60
DEFAULT_CALENDAR_WEEKS = 6
MAX_TREND_WEEKS = 520
DEFAULT_TREND_WEEKS = 52
#: dates outside these years are refused (no athlete logged anything before 1970; keeps date math in range)
MIN_YEAR, MAX_YEAR = 1970, 2100
#: rows of quarantine listed by the sync route (newest first)
QUARANTINE_LIMIT = 100

_MONTH = re.compile(r"(\d{4})-(\d{2})")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INT = re.compile(r"[0-9]{1,7}")
WEEK = dt.timedelta(days=7)


class ParamError(ValueError):
    """A query parameter that is not what the route takes; the message says what it takes."""


# --- parameters -------------------------------------------------------------------------------------------

def _shown(value: str) -> str:
    """``value`` for an error message: short, so that a huge parameter is not echoed back."""
    return repr(value) if len(value) <= 24 else repr(value[:20] + "...")


def parse_month(value: str) -> dt.date:
    """``YYYY-MM`` -> the first day of that month."""
    match = _MONTH.fullmatch(value)
    if not match or not 1 <= int(match[2]) <= 12 or not MIN_YEAR <= int(match[1]) <= MAX_YEAR:
        raise ParamError(f"month must be YYYY-MM with a month 01-12 and a year {MIN_YEAR}-{MAX_YEAR}, "
                         f"got {_shown(value)}")
    return dt.date(int(match[1]), int(match[2]), 1)


def parse_date(value: str, name: str) -> dt.date:
    """``YYYY-MM-DD`` -> a date."""
    day = None
    if _DATE.fullmatch(value):
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            day = None
    if day is None or not MIN_YEAR <= day.year <= MAX_YEAR:
        raise ParamError(f"{name} must be a date YYYY-MM-DD in the years {MIN_YEAR}-{MAX_YEAR}, got {_shown(value)}")
    return day


def parse_weeks(value: str | None, maximum: int, default: int) -> int:
    """A week count 1..``maximum`` (``default`` when not given)."""
    if value is None:
        return default
    if not _INT.fullmatch(value) or not 1 <= int(value) <= maximum:
        raise ParamError(f"weeks must be a whole number from 1 to {maximum}, got {_shown(value)}")
    return int(value)


def monday(day: dt.date) -> dt.date:
    """The Monday of ``day``'s ISO week."""
    return day - dt.timedelta(days=day.weekday())


def month_weeks(first_of_month: dt.date) -> tuple[dt.date, int]:
    """The Monday of the first ISO week touching the month, and how many weeks touch it (4-6)."""
    next_month = (first_of_month + dt.timedelta(days=32)).replace(day=1)
    first_week = monday(first_of_month)
    last_week = monday(next_month - dt.timedelta(days=1))
    return first_week, (last_week - first_week).days // 7 + 1


def same_day_last_year(day: dt.date) -> dt.date:
    """``day`` one year earlier; 29 February becomes the 28th."""
    try:
        return day.replace(year=day.year - 1)
    except ValueError:
        return day.replace(year=day.year - 1, day=28)


# --- whose page ------------------------------------------------------------------------------------------

class NotShown(Exception):
    """The user may not see the athlete asked for (404: whether they exist is not told), or no athlete at all."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def athletes_shown(cursor: Any, user: str) -> list[dict[str, Any]]:
    """The athletes Airflow user ``user`` may see (:func:`fitness_pipeline.athletes.visible_to`), by id."""
    from fitness_pipeline import athletes

    return [{"id": a.id, "name": a.name, "active": a.active, "inactive_reason": a.inactive_reason}
            for a in athletes.visible_to(athletes.all_athletes(cursor), user)]


def athlete_shown(cursor: Any, user: str, requested: str | None) -> dict[str, Any]:
    """The athlete whose data this request shows: ``requested`` (an id) if ``user`` may see them, else the first
    they may see. :class:`NotShown` when they may see none, or not the one asked for."""
    shown = athletes_shown(cursor, user)
    if not shown:
        raise NotShown(403, "no_athlete", "No athlete's training is shown to you: an admin maps Airflow users to "
                                          "athletes with python -m fitness_pipeline.athletes users NAME USER...")
    if requested is None:
        return shown[0]
    for athlete in shown:
        if str(athlete["id"]) == requested.strip():
            return athlete
    raise NotShown(404, "no_such_athlete", "There is no athlete of that id on your training page.")


def for_athlete(cursor: Any, user: str, requested: str | None, query: Any, *args: Any) -> dict[str, Any]:
    """``query(cursor, *args, athlete_id)`` for the athlete :func:`athlete_shown` picks, in the same transaction."""
    return query(cursor, *args, athlete_shown(cursor, user, requested)["id"])


# --- the transaction --------------------------------------------------------------------------------------

@contextmanager
def read_only(conn_id: str = FITNESS_DB_CONN_ID) -> Iterator[Any]:
    """A cursor in a read-only transaction on ``conn_id`` (``PostgresHook``) with a statement timeout of
    :data:`STATEMENT_TIMEOUT`; rolled back and closed on the way out, whatever happened."""
    from fitness_pipeline.db import connect

    conn = connect(conn_id)
    try:
        conn.autocommit = False
        cursor = conn.cursor()
        try:
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            yield cursor
        finally:
            cursor.close()
            conn.rollback()
    finally:
        conn.close()


# --- values -----------------------------------------------------------------------------------------------

def _json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    return value


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def rows(cursor: Any, statement: sa.sql.ClauseElement) -> list[dict[str, Any]]:
    """The rows of ``statement`` as dicts of JSON-ready values, by column name."""
    execute(cursor, statement)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, map(_json, row), strict=True)) for row in cursor.fetchall()]


# --- calendar ---------------------------------------------------------------------------------------------

_NO_TOTALS = {"activities": 0, "distance_km": 0.0, "moving_time_s": 0, "elevation_m": 0.0,
              "avg_weight_kg": None, "avg_kcal": None, "logged_days": 0}


def calendar(cursor: Any, first_week: dt.date, weeks: int, today: dt.date, athlete_id: int) -> dict[str, Any]:
    """``weeks`` ISO weeks of ``athlete_id`` from the Monday ``first_week``: each day's activities, weight and kcal,
    and each week's totals. ``empty`` says that the database holds no data of theirs at all (not just in these
    weeks)."""
    end = first_week + weeks * WEEK
    a = views.training_activity.table.c
    activities = rows(cursor, sa.select(a.id, a.day, a.sport_type, a.name, a.distance_km, a.moving_time_s,
                                        a.elevation_m, a.pace_s_per_km, a.kcal_burned, a.lap_count)
                      .where(a.athlete_id == athlete_id, a.day >= first_week, a.day < end)
                      .order_by(a.start_date_local, a.id))
    d = views.training_day.table.c
    days = {row["day"]: row for row in rows(
        cursor, sa.select(d.day, d.weight_kg, d.kcal)
        .where(d.athlete_id == athlete_id, d.day >= first_week, d.day < end,
               sa.or_(d.weighins > 0, d.kcal.is_not(None))))}
    w = views.training_week.table.c
    totals = {row.pop("week_start"): row for row in rows(
        cursor, sa.select(w.week_start, w.activities, w.distance_km, w.moving_time_s, w.elevation_m,
                          w.avg_weight_kg, w.avg_kcal, w.logged_days)
        .where(w.athlete_id == athlete_id, w.week_start >= first_week, w.week_start < end))}
    empty = not (activities or days or totals) and not has_data(cursor, athlete_id)

    by_day: dict[str, list[dict[str, Any]]] = {}
    for activity in activities:
        by_day.setdefault(activity.pop("day"), []).append(activity)
    calendar_weeks = []
    for week in range(weeks):
        week_start = first_week + week * WEEK
        week_days = []
        for offset in range(7):
            day = (week_start + dt.timedelta(days=offset)).isoformat()
            logged = days.get(day, {})
            week_days.append({"date": day, "activities": by_day.get(day, []),
                              "weight_kg": _float(logged.get("weight_kg")), "kcal": _float(logged.get("kcal"))})
        calendar_weeks.append({"week_start": week_start.isoformat(), "days": week_days,
                               "totals": totals.get(week_start.isoformat(), dict(_NO_TOTALS))})
    return {"today": today.isoformat(), "first_week": first_week.isoformat(), "empty": empty,
            "weeks": calendar_weeks}


def parse_activity_id(value: str | None) -> int:
    """The ``id`` parameter: a Strava activity id (a positive whole number)."""
    text = (value or "").strip()
    if not text.isdigit() or not 0 < int(text) < 2**63:
        raise ParamError(f"id={_shown(text)}: expected a Strava activity id (a positive whole number)")
    return int(text)


def activity(cursor: Any, activity_id: int, athlete_id: int) -> dict[str, Any]:
    """One activity of ``athlete_id`` with what its detail adds (description, calories, device, gear) and its laps;
    :class:`NotShown` (404) for an activity that is not theirs, or deleted."""
    from fitness_pipeline.schema import strava_activity_detail, strava_gear, strava_lap

    a, d, g = views.training_activity.table.c, strava_activity_detail.c, strava_gear.c
    found = rows(cursor, sa.select(a.id, a.day, a.start_date_local, a.sport_type, a.name, a.distance_km,
                                   a.moving_time_s, a.elevation_m, a.pace_s_per_km, a.average_heartrate,
                                   a.kcal_burned, d.description, d.device_name, g.name.label("gear_name"))
                 .select_from(views.training_activity.table
                              .outerjoin(strava_activity_detail, d.activity_id == a.id)
                              .outerjoin(strava_gear, sa.and_(g.id == d.gear_id, g.athlete_id == a.athlete_id)))
                 .where(a.id == activity_id, a.athlete_id == athlete_id))
    if not found:
        raise NotShown(404, "no_such_activity", "There is no activity of that id on this training page.")
    lap = strava_lap.c
    laps = rows(cursor, sa.select(lap.lap_index, lap.name, lap.distance, lap.moving_time, lap.elapsed_time,
                                  lap.average_speed, lap.average_heartrate, lap.max_heartrate, lap.average_cadence,
                                  lap.average_watts, lap.total_elevation_gain)
                .where(lap.activity_id == activity_id, lap.athlete_id == athlete_id).order_by(lap.lap_index))
    return {**found[0], "laps": laps}


def has_data(cursor: Any, athlete_id: int) -> bool:
    """Whether the database holds any activity, weigh-in or nutrition log (not deleted) of ``athlete_id``."""
    day = views.training_day.table
    execute(cursor, sa.select(sa.exists().where(day.c.athlete_id == athlete_id)))
    return bool(cursor.fetchone()[0])


# --- trends -----------------------------------------------------------------------------------------------

#: an integer day number for window frames (PostgreSQL has no RANGE offset of days over ``date``)
_DAY_NUMBER_ORIGIN = sa.literal_column("DATE '2000-01-03'", sa.Date)


def trends(cursor: Any, weeks: int, today: dt.date, athlete_id: int) -> dict[str, Any]:
    """The ``weeks`` ISO weeks ending with ``today``'s: distance and time per week and sport, weight with
    its 7-day rolling average, kcal per logged day with the week's average; and the year to date."""
    last_week = monday(today)
    first_week = last_week - (weeks - 1) * WEEK
    end = last_week + WEEK
    s = views.training_week_sport.table.c
    weekly_by_sport = rows(cursor, sa.select(s.week_start, s.sport_type, s.activities, s.distance_km,
                                             s.moving_time_s)
                           .where(s.athlete_id == athlete_id, s.week_start >= first_week, s.week_start < end)
                           .order_by(s.week_start, s.sport_type))

    d = views.training_day.table.c
    # the average of the weigh-in days among the 7 calendar days ending with each one (the first ones
    # of the range look back before it)
    weighed = (sa.select(d.day.label("date"), d.weight_kg,
                         sa.func.avg(d.weight_kg).over(order_by=d.day - _DAY_NUMBER_ORIGIN, range_=(-6, 0))
                         .label("avg7_kg"))
               .where(d.athlete_id == athlete_id, d.day >= first_week - dt.timedelta(days=6), d.day < end,
                      d.weighins > 0)
               .subquery("weighed"))
    weight = rows(cursor, sa.select(weighed).where(weighed.c.date >= first_week).order_by(weighed.c.date))
    kcal = rows(cursor, sa.select(d.day.label("date"), d.kcal,
                                  sa.func.avg(d.kcal).over(partition_by=d.week_start).label("week_avg_kcal"))
                .where(d.athlete_id == athlete_id, d.day >= first_week, d.day < end, d.kcal.is_not(None))
                .order_by(d.day))
    return {"first_week": first_week.isoformat(), "last_week": last_week.isoformat(),
            "weekly_by_sport": weekly_by_sport, "weight": weight, "kcal": kcal,
            "ytd": year_to_date(cursor, today, athlete_id)}


_YTD_KEYS = ("activities", "distance_km", "moving_time_s", "elevation_m")


def year_to_date(cursor: Any, today: dt.date, athlete_id: int) -> dict[str, Any]:
    """Activities, km, moving time and elevation from 1 January to ``today``, and over the same dates last year."""
    a = views.training_activity.table.c
    last_year_end = same_day_last_year(today)
    periods = {"this_year": a.day.between(today.replace(month=1, day=1), today),
               "last_year": a.day.between(dt.date(today.year - 1, 1, 1), last_year_end)}
    columns = []
    for period, inside in periods.items():
        columns += [sa.func.count().filter(inside).label(f"{period}_activities"),
                    *(sa.func.coalesce(sa.func.sum(a[key]).filter(inside), 0).label(f"{period}_{key}")
                      for key in _YTD_KEYS[1:])]
    (row,) = rows(cursor, sa.select(*columns).where(a.athlete_id == athlete_id, a.day >= dt.date(today.year - 1, 1, 1),
                                                    a.day <= today))
    result: dict[str, Any] = {"as_of": today.isoformat()}
    for period in periods:
        result[period] = {key: (float(row[f"{period}_{key}"]) if key in ("distance_km", "elevation_m")
                                else int(row[f"{period}_{key}"])) for key in _YTD_KEYS}
    result["last_year"]["as_of"] = last_year_end.isoformat()
    return result


# --- sync health ------------------------------------------------------------------------------------------

def sync(cursor: Any, athlete_id: int) -> dict[str, Any]:
    """Per source the latest sync of ``athlete_id`` and what it did, their quarantine (never a payload), their
    OAuth tokens' refresh and expiry times (never a token), and the application's rate-limit usage last seen."""
    h = views.sync_health.table
    q = schema.quarantine.c
    t = views.token_health.table
    r = views.rate_limit_health.table
    from fitness_pipeline import athletes

    person = next(a for a in athletes.all_athletes(cursor) if a.id == athlete_id)
    return {
        "athlete": {"id": person.id, "name": person.name, "active": person.active,
                    "inactive_reason": person.inactive_reason},
        "sources": rows(cursor, sa.select(h).where(h.c.athlete_id == athlete_id).order_by(h.c.source)),
        "quarantine": rows(cursor, sa.select(q.source, q.record_key, q.reason, q.first_seen, q.last_seen,
                                             q.times_seen).where(q.athlete_id == athlete_id)
                           .order_by(q.last_seen.desc(), q.source, q.record_key).limit(QUARANTINE_LIMIT)),
        "tokens": rows(cursor, sa.select(t).where(t.c.athlete_id == athlete_id).order_by(t.c.token_key)),
        "rate_limits": rows(cursor, sa.select(r).order_by(r.c.api, r.c.bucket)),
    }

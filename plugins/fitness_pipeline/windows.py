"""Which stretch of time a run fetches (a pure function of the run, never of "now"), and which
range of a table that listing proves complete (for deletions)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

HOUR = dt.timedelta(hours=1)
#: civil dates are at most this far from UTC (UTC+14 … UTC-12)
MAX_UTC_OFFSET = dt.timedelta(hours=14)


@dataclass(frozen=True)
class Window:
    """A closed-open UTC interval ``[start, end)``."""

    start: dt.datetime
    end: dt.datetime


def extraction_window(
    data_interval_start: dt.datetime | None,
    data_interval_end: dt.datetime | None,
    run_after: dt.datetime | None,
    lookback: dt.timedelta,
) -> Window:
    """The run's data interval widened backwards by ``lookback`` (late uploads land inside it).

    A run without a data interval (Airflow 3's manual trigger without a logical date) takes
    the last full hour before ``run_after``, so a re-run of it fetches the same window.
    """
    if lookback < dt.timedelta(0):
        raise ValueError("lookback must not be negative")
    if data_interval_start is not None and data_interval_end is not None and data_interval_end > data_interval_start:
        start, end = _utc(data_interval_start), _utc(data_interval_end)
    else:
        anchor = _utc(run_after or data_interval_end or data_interval_start or _missing())
        end = anchor.replace(minute=0, second=0, microsecond=0)
        start = end - HOUR
    return Window(start - lookback, end)


def _utc(value: dt.datetime) -> dt.datetime:
    """A plain ``datetime`` in UTC. Airflow hands out pendulum DateTimes, whose arithmetic
    can drop the zone (pendulum 3: ``DateTime(tz=timezone.utc) - timedelta`` is naive)."""
    if value.tzinfo is None:
        raise ValueError("run dates must be time-zone aware")
    v = value.astimezone(dt.UTC)
    return dt.datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, tzinfo=dt.UTC)


def _missing() -> dt.datetime:
    raise ValueError("the run has neither a data interval nor a run_after date")


#: before any activity or measurement these APIs hold (Strava started in 2009)
HISTORY_START = dt.datetime(2008, 1, 1, tzinfo=dt.UTC)


def parse_bound(value: str | dt.date | dt.datetime) -> dt.datetime:
    """A history bound given as a date (``2021-03-01`` means its 00:00 UTC) or an aware date-time."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value) if "T" in value or " " in value else dt.date.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return _utc(value)


def fetch_window(base: Window, *, history_start: str | None = None, history_end: str | None = None,
               full_history: bool = False) -> Window:
    """The window a run fetches, from its :func:`extraction_window` ``base``.

    ``history_start``/``history_end``: a history import (manual trigger) of that range instead.
    ``full_history``: a full reconciliation, from :data:`HISTORY_START` to the base window's end.
    """
    if history_start:
        start = parse_bound(history_start)
        end = parse_bound(history_end) if history_end else base.end
        if end <= start:
            raise ValueError(f"history_end ({end:%Y-%m-%d %H:%M}) must be after history_start ({start:%Y-%m-%d %H:%M})")
        return Window(start, end)
    if full_history:
        return Window(HISTORY_START, base.end)
    return base


@dataclass(frozen=True)
class Bounds:
    """A range of a column's values: ``lower`` (inclusive or not) to ``upper`` (exclusive)."""

    lower: dt.datetime | dt.date
    upper: dt.datetime | dt.date
    lower_inclusive: bool = True


def exclusive_seconds(window: Window) -> Bounds:
    """What Strava's ``after``/``before`` list for ``window``: whole epoch seconds, both exclusive."""
    return Bounds(_whole_second(window.start), _whole_second(window.end), lower_inclusive=False)


def half_open(window: Window) -> Bounds:
    """Instants in ``[start, end)``, as Google's ``physical_time`` filters list them."""
    return Bounds(window.start, window.end)


def civil_dates_touching(window: Window) -> Bounds:
    """The civil dates ``[first, end)`` that any instant of ``window`` falls on in some time zone."""
    return Bounds((window.start - MAX_UTC_OFFSET).date(), (window.end + MAX_UTC_OFFSET).date() + dt.timedelta(days=1))


def _whole_second(value: dt.datetime) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(value.timestamp()), dt.UTC)

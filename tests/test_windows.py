"""What each run fetches: a pure function of the run."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from fitness_pipeline.windows import Window, extraction_window

UTC = dt.UTC
LOOKBACK = dt.timedelta(hours=72)


def test_data_interval_widened_by_lookback() -> None:
    start = dt.datetime(2026, 11, 28, 10, tzinfo=UTC)
    window = extraction_window(start, start + dt.timedelta(hours=1), None, LOOKBACK)
    assert window == Window(dt.datetime(2026, 11, 25, 10, tzinfo=UTC), dt.datetime(2026, 11, 28, 11, tzinfo=UTC))


def test_pendulum_dates_stay_aware() -> None:
    """Airflow passes pendulum DateTimes; pendulum 3 drops the zone in `- timedelta` for timezone.utc."""
    start = pendulum.datetime(2026, 11, 28, 10).in_timezone(dt.UTC)
    window = extraction_window(start, start.add(hours=1), None, LOOKBACK)
    assert window.start.tzinfo is not None and window.end.tzinfo is not None
    assert window.start == dt.datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert type(window.start) is dt.datetime


def test_other_zones_are_converted_to_utc() -> None:
    tokyo = dt.timezone(dt.timedelta(hours=9))
    start = dt.datetime(2026, 11, 28, 19, tzinfo=tokyo)
    window = extraction_window(start, start + dt.timedelta(hours=1), None, dt.timedelta(0))
    assert window.start == dt.datetime(2026, 11, 28, 10, tzinfo=UTC)


@pytest.mark.parametrize("interval", [(None, None), "zero-length"])
def test_run_without_interval_takes_last_full_hour_before_run_after(interval: object) -> None:
    run_after = dt.datetime(2026, 11, 28, 10, 42, 17, tzinfo=UTC)
    start = end = run_after if interval == "zero-length" else None
    window = extraction_window(start, end, run_after, LOOKBACK)
    assert window.end == dt.datetime(2026, 11, 28, 10, tzinfo=UTC)
    assert window.start == window.end - dt.timedelta(hours=1) - LOOKBACK
    # the same run re-run later fetches the same window: nothing depends on "now"
    assert extraction_window(start, end, run_after, LOOKBACK) == window


def test_naive_dates_and_negative_lookback_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        extraction_window(dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 1, 1), None, LOOKBACK)
    with pytest.raises(ValueError, match="negative"):
        extraction_window(None, None, dt.datetime(2026, 1, 1, tzinfo=UTC), -LOOKBACK)


def test_history_import_and_full_reconciliation_windows() -> None:
    from fitness_pipeline.windows import HISTORY_START, fetch_window

    base = Window(dt.datetime(2026, 11, 25, 10, tzinfo=UTC), dt.datetime(2026, 11, 28, 11, tzinfo=UTC))
    assert fetch_window(base) == base
    assert fetch_window(base, full_history=True) == Window(HISTORY_START, base.end)
    assert fetch_window(base, history_start="2021-03-01") == Window(dt.datetime(2021, 3, 1, tzinfo=UTC), base.end)
    assert fetch_window(base, history_start="2021-03-01", history_end="2021-04-01T12:00:00+02:00") == Window(
        dt.datetime(2021, 3, 1, tzinfo=UTC), dt.datetime(2021, 4, 1, 10, tzinfo=UTC))
    with pytest.raises(ValueError, match="must be after"):
        fetch_window(base, history_start="2021-03-01", history_end="2021-03-01")

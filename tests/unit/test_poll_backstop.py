"""With webhooks on, the hourly poll of Strava becomes a backstop every N hours (issue 12, part 5): which runs
list, and how the setting is read."""

from __future__ import annotations

import datetime as dt

import pytest

from fitness_pipeline import sources
from fitness_pipeline.handover import POLL_EVERY_CHOICES, RunParams
from fitness_pipeline.tasks.plan import polled

STRAVA = sources.get("strava_activity")
WEIGHT = sources.get("fitbit_weight")


def at(hour: int) -> dt.datetime:
    return dt.datetime(2026, 12, 6, hour, tzinfo=dt.UTC)


def test_every_hour_by_default_and_for_sources_without_the_setting() -> None:
    assert all(polled(STRAVA, RunParams(), at(hour)) for hour in range(24))
    assert all(polled(WEIGHT, RunParams(strava_poll_every_hours=6), at(hour)) for hour in range(24))


def test_every_six_hours_lists_at_midnight_and_every_sixth_hour_only() -> None:
    run = RunParams(strava_poll_every_hours=6)
    assert [hour for hour in range(24) if polled(STRAVA, run, at(hour))] == [0, 6, 12, 18]
    # a history import and a run without an interval always list
    assert polled(STRAVA, RunParams(strava_poll_every_hours=6, history_start="2026-01-01"), at(5))
    assert polled(STRAVA, run, None)
    # an interval end in another zone is read in UTC
    assert polled(STRAVA, run, at(6).astimezone(dt.timezone(dt.timedelta(hours=2))))


def test_the_lookback_covers_the_hours_between_two_polls() -> None:
    assert max(POLL_EVERY_CHOICES) <= RunParams().lookback_hours
    assert all(24 % hours == 0 for hours in POLL_EVERY_CHOICES)  # midnight is always a poll
    # a lookback too short for the gap: every run lists (nothing between two polls is left unlisted)
    short = RunParams(strava_poll_every_hours=6, lookback_hours=2)
    assert all(polled(STRAVA, short, at(hour)) for hour in range(24))
    assert [h for h in range(24) if polled(STRAVA, RunParams(strava_poll_every_hours=6, lookback_hours=5), at(h))] \
        == [0, 6, 12, 18]


def test_the_setting_comes_from_the_environment_and_from_params() -> None:
    assert RunParams.poll_every_from_environment({}) == 1
    assert RunParams.poll_every_from_environment({"FITNESS_STRAVA_POLL_EVERY_HOURS": " 6 "}) == 6
    for bad in ("5", "0", "-1", "x", "48"):
        with pytest.raises(ValueError, match="FITNESS_STRAVA_POLL_EVERY_HOURS"):
            RunParams.poll_every_from_environment({"FITNESS_STRAVA_POLL_EVERY_HOURS": bad})
    assert RunParams.from_params({"strava_poll_every_hours": "4"}).strava_poll_every_hours == 4

"""Which sources a run syncs and which window each fetches: functions of the run and its params."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from fitness_pipeline import sources
from fitness_pipeline.handover import RunParams
from fitness_pipeline.sources import SourceSpec
from fitness_pipeline.windows import Window, extraction_window, fetch_window


def window_for_run(spec: SourceSpec, params: RunParams, data_interval_start: dt.datetime | None,
                   data_interval_end: dt.datetime | None, dag_run: Any) -> Window:
    """The window ``spec`` fetches in this run.

    Normally the data interval widened by ``lookback_hours``. The run whose interval ends at
    00:00 UTC re-lists the whole history of the sources whose reconciliation allows it
    (``Reconcile.daily_full``; param ``daily_full_reconcile``). ``history_start``/``history_end``
    import a range.
    """
    run_after = getattr(dag_run, "run_after", None) or getattr(dag_run, "execution_date", None)
    base = extraction_window(data_interval_start, data_interval_end, run_after, params.lookback)
    full = (params.daily_full_reconcile and spec.reconcile is not None and spec.reconcile.daily_full
            and data_interval_end is not None and base.end.hour == 0)
    return retained(spec, params, fetch_window(base, history_start=params.history_start,
                                               history_end=params.history_end, full_history=full))


def retention_days(spec: SourceSpec, params: RunParams) -> int | None:
    """How many days of ``spec``'s records a run keeps (its ``retention_param``), None: all."""
    return getattr(params, spec.retention_param) if spec.retention_param else None


def retained(spec: SourceSpec, params: RunParams, window: Window) -> Window:
    """``window`` without what lies beyond ``spec``'s retention (counted back from the window's end): records
    the load would delete again are never fetched (a deployer bound by a caching limit, e.g. Strava's)."""
    days = retention_days(spec, params)
    if days is None:
        return window
    horizon = window.end - dt.timedelta(days=days)
    return Window(max(window.start, horizon), window.end)


def wanted(spec: SourceSpec, params: RunParams) -> bool:
    """Whether the run's ``sources`` param (default: all) includes ``spec``."""
    return spec.id in sources.selected(params.sources)


def budget_share(params: RunParams) -> float:
    """The share of the Strava budget a run's extracts may use: ``history_budget_share`` for a history import,
    all of it for the hourly runs (which come first)."""
    return params.history_budget_share if params.history_start else 1.0


def polled(spec: SourceSpec, params: RunParams, data_interval_end: dt.datetime | None) -> bool:
    """Whether this run lists ``spec``: always, unless its ``poll_every_param`` says every N hours and this is an
    hourly run whose interval does not end at a multiple of N hours (UTC). Midnight is always one (the daily full
    reconciliation), and so is a history import, a run without an interval, and every run when the lookback is
    too short to cover the hours between two polls."""
    every = int(getattr(params, spec.poll_every_param)) if spec.poll_every_param else 1
    if every <= 1 or params.history_start or data_interval_end is None:
        return True
    if params.lookback_hours + 1 < every:  # the polls' windows would leave hours between them unlisted
        return True
    return data_interval_end.astimezone(dt.UTC).hour % every == 0


def start_task(source: str, athlete: Mapping[str, Any], params: Mapping[str, Any] | None, *,
               mapped: bool = True) -> tuple[SourceSpec, RunParams]:
    """What each task of a source's group does first: label its mapped task with the athlete's name, read the
    run's params (unmapped, on Airflow 2: check that the run asks for the default athlete only), and skip when the
    run does not sync ``source``. Returns the source and the params."""
    from fitness_pipeline.compat import AirflowSkipException, name_map_index
    from fitness_pipeline.tasks import prepare

    name_map_index(athlete["name"])
    run = RunParams.from_params(params)
    if not mapped:
        prepare.default_athlete_only(run.athletes)
    spec = sources.get(source)
    if not wanted(spec, run):
        raise AirflowSkipException(f"{source} is not in this run's sources")
    return spec, run

"""What the DAG's tasks hand each other through XCom, and the run's params, as typed structures.

The data itself moves through the fitness database (``raw_record``, the staging tables); XCom
carries only these small summaries. Each serializes to plain JSON (``to_xcom``) and back
(``from_xcom``), so XCom needs no custom serializer and old values stay readable.

Imported when the DAG file is parsed (the params' defaults are defined here once): standard
library only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fitness_pipeline.windows import Bounds, Window

T = TypeVar("T", bound="_Handover")

#: the environment variable with a deployment's ``strava_retention_days``
RETENTION_ENV = "FITNESS_STRAVA_RETENTION_DAYS"
#: how the "run id" of a batch that webhook events sync starts (DAG fitness_events): not a run of fitness_sync,
#: so fitness_sync's clean-up of finished batches leaves it alone
EVENT_RUN_PREFIX = "webhook-event-"
#: the hours a poll interval may be: those that divide a day, so that the midnight run is always one that polls
POLL_EVERY_CHOICES = (1, 2, 3, 4, 6, 8, 12, 24)
#: the default of ``strava_poll_every_hours`` (a deployment whose webhooks keep the activities current)
POLL_EVERY_ENV = "FITNESS_STRAVA_POLL_EVERY_HOURS"

#: ``athlete.id`` of the default athlete (:data:`fitness_pipeline.schema.DEFAULT_ATHLETE_ID`; repeated here
#: because this module is parsed with the DAG and imports no SQLAlchemy): hand-overs of versions before
#: athletes are its
DEFAULT_ATHLETE_ID = 1


@dataclass(frozen=True)
class RunParams:
    """The DAG's params with their defaults (the DAG's ``Param`` objects read these defaults)."""

    #: how far before the data interval to re-fetch (late uploads, edits, deletions)
    lookback_hours: float = 72
    #: which sources this run syncs; empty: all
    sources: tuple[str, ...] = ()
    #: which athletes (names) this run syncs; empty: every active one
    athletes: tuple[str, ...] = ()
    #: a history import: fetch from this date (YYYY-MM-DD, UTC) instead of the hourly window
    history_start: str | None = None
    #: ... up to this date (default: the run's data interval end)
    history_end: str | None = None
    #: the run ending at 00:00 UTC re-lists all history of the sources that allow it
    daily_full_reconcile: bool = True
    #: refuse (fail) to mark more than this share of a window's rows deleted
    max_deleted_share: float = 0.5
    #: a history import uses at most this share of each Strava rate-limit window and day (the hourly runs
    #: keep the rest)
    history_budget_share: float = 0.5
    #: reading activities' details (laps, gear, calories) uses at most this share of each Strava rate-limit window
    #: and day (0: no details are read by the runs; webhook events still read theirs)
    detail_budget_share: float = 0.5
    #: keep only this many days of Strava-sourced rows (None: all): older ones are not fetched, and deleted
    strava_retention_days: int | None = None
    #: list Strava activities only in the runs whose interval ends at a multiple of this many hours (UTC), the
    #: midnight run (the daily full reconciliation) always among them; with webhooks on, events keep the
    #: activities current and the poll is the backstop that catches what they missed (the lookback covers the gap)
    strava_poll_every_hours: int = 1
    #: purge this athlete (name) before syncing: only when ``purge_confirm`` names them too
    purge_athlete: str | None = None
    purge_confirm: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> RunParams:
        """The run's params (``params`` or ``dag_run.conf``); missing or null values take the defaults."""
        params = params or {}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = params.get(f.name)
            if value is None:
                continue
            values[f.name] = tuple(value) if f.name in ("sources", "athletes") else value
        if "lookback_hours" in values:
            values["lookback_hours"] = float(values["lookback_hours"])
        for name in ("max_deleted_share", "history_budget_share", "detail_budget_share"):
            if name in values:
                values[name] = float(values[name])
        for name in ("strava_retention_days", "strava_poll_every_hours"):
            if name in values:
                values[name] = int(values[name])
        if "daily_full_reconcile" in values:
            values["daily_full_reconcile"] = bool(values["daily_full_reconcile"])
        return cls(**values)

    @staticmethod
    def retention_from_environment(environ: Mapping[str, str] | None = None) -> int | None:
        """``$FITNESS_STRAVA_RETENTION_DAYS`` (a positive whole number of days), the default of
        ``strava_retention_days``; None when unset or empty."""
        raw = (os.environ if environ is None else environ).get(RETENTION_ENV, "").strip()
        if not raw:
            return None
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{RETENTION_ENV}={raw!r}: expected a whole number of days (1 or more), or nothing")
        return int(raw)

    @staticmethod
    def poll_every_from_environment(environ: Mapping[str, str] | None = None) -> int:
        """``$FITNESS_STRAVA_POLL_EVERY_HOURS`` (1 to 24, dividing 24, so that the midnight run polls), the default
        of ``strava_poll_every_hours``; 1 when unset or empty."""
        raw = (os.environ if environ is None else environ).get(POLL_EVERY_ENV, "").strip()
        if not raw:
            return 1
        if not raw.isdigit() or int(raw) not in POLL_EVERY_CHOICES:
            raise ValueError(f"{POLL_EVERY_ENV}={raw!r}: expected one of {', '.join(map(str, POLL_EVERY_CHOICES))} "
                             "(hours dividing a day), or nothing")
        return int(raw)

    @property
    def lookback(self) -> dt.timedelta:
        return dt.timedelta(hours=self.lookback_hours)


class _Handover:
    def to_xcom(self) -> dict[str, Any]:
        """Plain JSON (datetimes and dates as ISO 8601 text)."""
        return _plain(dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_xcom(cls: type[T], value: Mapping[str, Any] | T) -> T:
        if isinstance(value, cls):
            return value
        return cls(**_typed(cls, dict(value)))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ReconcileRange(_Handover):
    """The range of ``column`` an extract listed completely: rows inside it that the batch did not
    bring are gone upstream."""

    column: str
    lower: dt.datetime | dt.date
    upper: dt.datetime | dt.date
    lower_inclusive: bool

    @classmethod
    def of(cls, column: str, bounds: Bounds) -> ReconcileRange:
        return cls(column, bounds.lower, bounds.upper, bounds.lower_inclusive)


@dataclass(frozen=True)
class Extracted(_Handover):
    """The extract task's result: a batch of records landed in ``raw_record``."""

    source: str
    batch_id: str
    extracted: int
    window: Window
    reconcile: ReconcileRange | None = None
    #: whose records (``athlete.id``)
    athlete_id: int = DEFAULT_ATHLETE_ID


@dataclass(frozen=True)
class Staged(_Handover):
    """The transform task's result: the batch's rows staged, its bad records quarantined."""

    extract: Extracted
    #: rows staged for the source's table, and for each companion table
    staged: int
    quarantined: int
    companions_staged: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.extract.source

    @property
    def batch_id(self) -> str:
        return self.extract.batch_id

    @property
    def athlete_id(self) -> int:
        return self.extract.athlete_id


@dataclass(frozen=True)
class Loaded(_Handover):
    """The load task's result: what the merge did (also recorded in ``sync_run``)."""

    source: str
    batch_id: str
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    quarantined: int
    athlete_id: int = DEFAULT_ATHLETE_ID
    #: rows deleted for good because they were older than the source's retention
    expired: int = 0


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):  # datetimes too
        return value.isoformat()
    return value


def _typed(cls: type, value: dict[str, Any]) -> dict[str, Any]:
    """``value``'s nested hand-overs, windows and dates rebuilt from their JSON form."""
    if cls is Extracted:
        value["window"] = Window(*(dt.datetime.fromisoformat(value["window"][k]) for k in ("start", "end")))
        if value.get("reconcile") is not None:
            value["reconcile"] = ReconcileRange.from_xcom(value["reconcile"])
    elif cls is Staged:
        if "extract" not in value:  # the flat dict of versions before these types (a run in flight at upgrade)
            flat = value
            value = {"staged": flat["staged"], "quarantined": flat["quarantined"],
                     "extract": {k: flat.get(k) for k in ("source", "batch_id", "extracted", "window", "reconcile")}}
        value["extract"] = Extracted.from_xcom(value["extract"])
    elif cls is ReconcileRange:
        parse = dt.datetime.fromisoformat if "T" in str(value["lower"]) else dt.date.fromisoformat
        value["lower"], value["upper"] = (v if isinstance(v, dt.date) else parse(v)
                                          for v in (value["lower"], value["upper"]))
    return value

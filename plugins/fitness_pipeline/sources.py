"""The sources this package syncs: one declaration each, and the registry the DAG and its tasks read.

A :class:`SourceSpec` holds everything specific to one source; everything generic (landing records,
staging rows, merging, reconciling deletions, recording the run) reads it. Adding a source is one
:func:`register` call (or an entry in :data:`BUILT_IN`), a hook method that lists its records, a pure
row function and its table in :mod:`fitness_pipeline.schema`; see the README's "Adding a source".

This module is imported when the DAG file is parsed: it imports nothing but the standard library,
:mod:`fitness_pipeline.windows` and :mod:`fitness_pipeline.handover`. Hooks, row functions and tables
are named by dotted path (``"package.module:attribute"``) and resolved when a task needs them.

A declaration says nothing about *which* account: its connection id is a default that a run may
override, and the DAG maps each source's tasks over the athletes (the hook is built with the athlete's
id, batch ids name the athlete, the loader reconciles and quarantines per athlete).
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fitness_pipeline import windows
from fitness_pipeline.handover import DEFAULT_ATHLETE_ID
from fitness_pipeline.windows import Window

#: a dotted path ``"package.module:attribute"`` resolved on first use, or the object itself
Ref = str | Callable[..., Any]


def resolve(ref: Ref) -> Any:
    """The object a :data:`Ref` names."""
    return pkgutil.resolve_name(ref) if isinstance(ref, str) else ref


@dataclass(frozen=True)
class Reconcile:
    """How an extract's listing becomes the range whose rows it proves complete (for deletions).

    ``column`` is the target's column the range applies to; ``bounds`` maps the run's window to
    the range the API was asked for (:func:`windows.exclusive_seconds`, :func:`windows.half_open`,
    :func:`windows.civil_dates_touching`), with the API's own inclusiveness.
    """

    column: str
    bounds: Callable[[Window], windows.Bounds]
    #: the daily run re-lists the whole history (catches deletions older than the lookback)
    daily_full: bool = False


@dataclass(frozen=True)
class SourceSpec:
    """One source: an API listing, its records' table, and how one becomes the other.

    The extract step calls ``extract`` (or, by default, lands every page ``fetch(hook, window)``
    yields); transform applies ``row`` to each landed record (or ``batch_rows`` to all of them at
    once); load merges the staged rows into ``table`` (and first into each of ``companions``,
    tables whose rows the same records bring) and reconciles deletions per ``reconcile``.
    """

    #: the one name of the source: task group, batch ids, ``sync_run.source``, ``quarantine.source``
    id: str
    #: the target table in :data:`fitness_pipeline.schema.metadata`; its staging table is ``stage_<table>``
    table: str
    #: the Airflow pool of the extract task (one per API: runs and backfills share its rate limit)
    pool: str
    #: the hook class (``conn_id`` is its first argument) and the connection used unless a run says otherwise
    hook: Ref
    conn_id: str
    #: ``(hook, window) -> iterable of pages`` (lists of JSON records) listed by the default extract
    fetch: Ref | None = None
    #: ``(spec, hook, batch_id, window, db_conn_id) -> records landed``: replaces the default extract
    extract: Ref | None = None
    #: ``record -> row`` (a pure function that raises ``RecordError`` for a bad record)
    row: Ref | None = None
    #: ``(cursor, records) -> TransformResult``: the records are transformed together (replaces ``row``)
    batch_rows: Ref | None = None
    #: ``record -> quarantine key``: must equal the target's primary key as text (default: the record's id)
    quarantine_key: Ref | None = None
    #: None: the source's listing never proves anything deleted
    reconcile: Reconcile | None = None
    companions: tuple[str, ...] = ()
    #: the run param (a :class:`~fitness_pipeline.handover.RunParams` field) that, when set, keeps only this many
    #: days of the source's records (by ``reconcile.column``): older ones are neither fetched nor kept
    retention_param: str | None = None
    #: ``(athlete_id, run_params) -> dict``: a step after the load that fills in what the listing lacks (Strava's
    #: detailed activities) within a share of the API budget; it writes ``enrich_tables``
    enrich: Ref | None = None
    enrich_tables: tuple[str, ...] = ()
    #: the run param (a :class:`~fitness_pipeline.handover.RunParams` field) saying every how many hours the hourly
    #: runs list this source (the others skip it: webhook events keep it current)
    poll_every_param: str | None = None
    #: one line for the trigger form and the docs
    description: str = ""

    def __post_init__(self) -> None:
        if (self.fetch is None) == (self.extract is None):
            raise ValueError(f"source {self.id!r}: give exactly one of fetch and extract")
        if (self.row is None) == (self.batch_rows is None):
            raise ValueError(f"source {self.id!r}: give exactly one of row and batch_rows")

    @property
    def target(self) -> Any:
        """The target ``sqlalchemy.Table``."""
        return _table(self.table)

    @property
    def staging(self) -> Any:
        """The staging ``sqlalchemy.Table`` between this source's transform and load."""
        from fitness_pipeline.schema import staging_for

        return staging_for(self.target)

    def companion_tables(self) -> list[Any]:
        return [_table(name) for name in self.companions]

    def enriched_tables(self) -> list[Any]:
        return [_table(name) for name in self.enrich_tables]

    def batch_id(self, run_id: str, athlete_id: int = DEFAULT_ATHLETE_ID) -> str:
        """The id of this source's batch of athlete ``athlete_id`` in DAG run ``run_id`` (``sync_run.batch_id``):
        ``<run_id>/<source>``, as before there were athletes, for the default athlete; ``.../athlete-<id>``
        for the others."""
        own = "" if athlete_id == DEFAULT_ATHLETE_ID else f"/athlete-{athlete_id}"
        return f"{run_id}/{self.id}{own}"

    def batch_suffix(self, athlete_id: int = DEFAULT_ATHLETE_ID) -> str:
        """What every batch id of this source and athlete ends with."""
        return self.batch_id("", athlete_id)

    def run_id_of(self, batch_id: str, athlete_id: int = DEFAULT_ATHLETE_ID) -> str:
        """The DAG run a batch id of this source and athlete belongs to (the inverse of :meth:`batch_id`)."""
        return batch_id.removesuffix(self.batch_suffix(athlete_id))

    def listed_range(self, window: Window) -> windows.Bounds | None:
        return self.reconcile.bounds(window) if self.reconcile else None


def _table(name: str) -> Any:
    from fitness_pipeline.schema import metadata

    try:
        return metadata.tables[name]
    except KeyError:
        raise LookupError(f"table {name!r} is not defined in fitness_pipeline.schema.metadata") from None


@dataclass
class Registry:
    """The sources a DAG syncs, in order."""

    specs: dict[str, SourceSpec] = field(default_factory=dict)

    def register(self, spec: SourceSpec) -> SourceSpec:
        if spec.id in self.specs:
            raise ValueError(f"a source named {spec.id!r} is already registered")
        self.specs[spec.id] = spec
        return spec

    def unregister(self, source_id: str) -> None:
        self.specs.pop(source_id, None)

    def get(self, source_id: str) -> SourceSpec:
        try:
            return self.specs[source_id]
        except KeyError:
            raise LookupError(f"no source {source_id!r}; registered: {', '.join(self.specs)}") from None

    def __iter__(self) -> Iterator[SourceSpec]:
        return iter(list(self.specs.values()))

    def ids(self) -> list[str]:
        return list(self.specs)

    def pools(self) -> set[str]:
        return {spec.pool for spec in self}


STRAVA_POOL = "strava_api"
GOOGLE_HEALTH_POOL = "google_health_api"

BUILT_IN: tuple[SourceSpec, ...] = (
    SourceSpec(
        id="strava_activity",
        table="strava_activity",
        pool=STRAVA_POOL,
        hook="fitness_pipeline.hooks.strava:StravaHook",
        conn_id="strava_default",
        extract="fitness_pipeline.tasks.strava:land_activities",
        row="fitness_pipeline.transforms.strava:strava_activity_row",
        # Strava's after/before are exclusive whole seconds
        reconcile=Reconcile("start_date", windows.exclusive_seconds, daily_full=True),
        retention_param="strava_retention_days",
        poll_every_param="strava_poll_every_hours",
        # each activity's DetailedActivity (laps, gear, calories), oldest missing first, within a budget share
        enrich="fitness_pipeline.tasks.details:enrich_for_run",
        enrich_tables=("strava_activity_detail", "strava_gear", "strava_lap"),
        description="Strava activities (SummaryActivity), then their details (laps, gear, calories)",
    ),
    SourceSpec(
        id="fitbit_weight",
        table="fitbit_weight",
        pool=GOOGLE_HEALTH_POOL,
        hook="fitness_pipeline.hooks.fitbit:FitbitHook",
        conn_id="fitbit_default",
        extract="fitness_pipeline.tasks.fitbit:land_weights",
        # weights with the body fat measured with them and the heights in force (for BMI)
        batch_rows="fitness_pipeline.tasks.fitbit:weight_rows",
        reconcile=Reconcile("measured_at", windows.half_open, daily_full=True),
        companions=("fitbit_height",),
        description="Fitbit body weight, body fat and BMI (Google Health API)",
    ),
    SourceSpec(
        id="fitbit_calories",
        table="fitbit_calories",
        pool=GOOGLE_HEALTH_POOL,
        hook="fitness_pipeline.hooks.fitbit:FitbitHook",
        conn_id="fitbit_default",
        fetch="fitness_pipeline.tasks.fitbit:calorie_pages",
        row="fitness_pipeline.transforms.fitbit:fitbit_calories_row",
        quarantine_key="fitness_pipeline.transforms.fitbit:rollup_key",
        # a full re-list would cost a roll-up call per 90 days of history: reconciled inside the window only
        reconcile=Reconcile("record_date", windows.civil_dates_touching),
        description="Fitbit calories eaten per day (Google Health API)",
    ),
)

#: the sources of the fitness_sync DAG
REGISTRY = Registry()
for _spec in BUILT_IN:
    REGISTRY.register(_spec)

#: former source names still accepted in the ``sources`` param (``strava`` was the task group's name)
ALIASES = {"strava": "strava_activity"}


def register(spec: SourceSpec) -> SourceSpec:
    """Add a source to :data:`REGISTRY` (the DAG file must be parsed after this to show it)."""
    return REGISTRY.register(spec)


def get(source_id: str) -> SourceSpec:
    return REGISTRY.get(ALIASES.get(source_id, source_id))


def selected(requested: Iterable[str] | None) -> set[str]:
    """The ids a run's ``sources`` param selects (empty or None: all), former names resolved."""
    if not requested:
        return set(REGISTRY.ids())
    return {ALIASES.get(name, name) for name in requested}

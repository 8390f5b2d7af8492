"""The SQL views over the fitness tables (SQLAlchemy Core), made by :func:`fitness_pipeline.ddl.ensure_schema`.

The training calendar, the demo's weekly summary and any BI tool a user points at the database read
the same views. Every view excludes deleted rows (``deleted_at IS NULL``) and counts by the athlete's
**local** date: Strava's ``start_date_local`` (the wall clock where the activity started), the civil
``record_date`` of weigh-ins and nutrition logs; never a UTC date. Weeks are ISO weeks, Monday first
(``week_start = date_trunc('week', day)::date``).

Each :class:`View` has its ``select()`` (what ``CREATE VIEW`` is made of) and a lightweight
``table`` (:func:`sqlalchemy.table`) with typed columns to query it with Core, e.g.
``sa.select(training_day.table).where(training_day.table.c.day.between(a, b))``.
:data:`VIEWS` lists them in dependency order (a view only reads views listed before it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from fitness_pipeline.schema import (
    ACTIVITY_LOCAL_DAY,
    ACTIVITY_LOCAL_WEEK,
    DELETED_AT,
    api_rate_limit,
    athlete,
    fitbit_calories,
    fitbit_weight,
    local_week,
    oauth_token,
    quarantine,
    strava_activity,
    strava_activity_detail,
    sync_run,
)

#: Strava sport types whose pace (s/km) the views compute
RUNNING_SPORT_TYPES = ("Run", "TrailRun", "VirtualRun")


@dataclass(frozen=True)
class View:
    """One view: its name, its definition and a description (its ``COMMENT ON VIEW``)."""

    name: str
    select: sa.Select
    comment: str
    table: sa.TableClause = field(init=False, compare=False)

    def __post_init__(self) -> None:
        columns = [sa.column(c.name, c.type) for c in self.select.selected_columns]
        object.__setattr__(self, "table", sa.table(self.name, *columns))

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self.select.selected_columns]


def _live(table: sa.Table) -> sa.ColumnElement:
    return table.c[DELETED_AT].is_(None)


# --- training_activity ---------------------------------------------------------------------------------

_a = strava_activity.c
_d = strava_activity_detail.c


def _divide(a: sa.ColumnElement, b: sa.ColumnElement) -> sa.ColumnElement:
    """``a / b`` in double precision, spelled the same by SQLAlchemy 1.4 and 2 (2's ``/`` adds casts)."""
    return a.op("/", return_type=sa.Float)(b)


_distance_km = _divide(_a.distance, sa.literal_column("1000.0"))
_sport_type = sa.func.coalesce(_a.sport_type, _a.activity_type)

training_activity = View(
    "training_activity",
    sa.select(
        _a.id,
        ACTIVITY_LOCAL_DAY.label("day"),
        ACTIVITY_LOCAL_WEEK.label("week_start"),
        _a.start_date_local,
        sa.type_coerce(_sport_type, sa.Text).label("sport_type"),
        _a.name,
        _distance_km.label("distance_km"),
        _a.moving_time.label("moving_time_s"),
        _a.elapsed_time.label("elapsed_time_s"),
        _a.total_elevation_gain.label("elevation_m"),
        sa.type_coerce(sa.case(
            (sa.and_(_sport_type.in_(RUNNING_SPORT_TYPES), _a.distance > 0),
             _divide(sa.cast(_a.moving_time, sa.Float), _distance_km)),
            else_=sa.null()), sa.Float).label("pace_s_per_km"),
        _a.average_heartrate,
        _a.athlete_id,
        # after athlete_id: added later, and CREATE OR REPLACE VIEW only appends columns
        _d.calories.label("kcal_burned"),
        _d.lap_count,
    ).select_from(strava_activity.outerjoin(strava_activity_detail, _d.activity_id == _a.id))
    .where(_live(strava_activity), _a.start_date_local.is_not(None)),
    "one row per Strava activity not deleted, on its local date (start_date_local); "
    "distance in km, pace in s/km for runs only; athlete_id: whose; kcal_burned and lap_count from the "
    "activity's detail (null until it is read)",
)


# --- training_day, training_week (one set of entries: activities, weigh-ins, nutrition logs) ----------

def _entries() -> sa.Subquery:
    """Every dated entry: one row per activity, weigh-in and day of nutrition log, by local day and week."""
    ta = training_activity.table.c
    null_float, null_int, null_id = sa.cast(sa.null(), sa.Float), sa.cast(sa.null(), sa.Integer), \
        sa.cast(sa.null(), sa.BigInteger)
    w, c = fitbit_weight.c, fitbit_calories.c
    activities = sa.select(
        ta.athlete_id, ta.day, ta.week_start, ta.id.label("activity_id"), ta.distance_km, ta.moving_time_s,
        ta.elevation_m, null_float.label("weight_kg"), null_float.label("kcal"))
    no_activity = (null_id.label("activity_id"), null_float.label("distance_km"), null_int.label("moving_time_s"),
                   null_float.label("elevation_m"))
    weighins = sa.select(
        w.athlete_id, w.record_date.label("day"), local_week(w.record_date).label("week_start"), *no_activity,
        w.weight.label("weight_kg"), null_float.label("kcal")).where(_live(fitbit_weight))
    calories = sa.select(
        c.athlete_id, c.record_date.label("day"), local_week(c.record_date).label("week_start"), *no_activity,
        null_float.label("weight_kg"), c.calories.label("kcal")).where(_live(fitbit_calories))
    return sa.union_all(activities, weighins, calories).subquery("entry")


_e = _entries().c


def _count(column: sa.ColumnElement) -> sa.ColumnElement:
    return sa.type_coerce(sa.func.count(column), sa.Integer)


def _total(column: sa.ColumnElement, type_: sa.types.TypeEngine) -> sa.ColumnElement:
    """The sum over the activities, 0 (not null) when there are none: no activity is 0 km."""
    return sa.type_coerce(sa.func.coalesce(sa.func.sum(column), 0), type_)


training_day = View(
    "training_day",
    sa.select(
        _e.day,
        _e.week_start,
        _count(_e.activity_id).label("activities"),
        _total(_e.distance_km, sa.Float).label("distance_km"),
        _total(_e.moving_time_s, sa.Integer).label("moving_time_s"),
        _total(_e.elevation_m, sa.Float).label("elevation_m"),
        sa.type_coerce(sa.func.avg(_e.weight_kg), sa.Float).label("weight_kg"),
        _count(_e.weight_kg).label("weighins"),
        sa.type_coerce(sa.func.sum(_e.kcal), sa.Float).label("kcal"),
        _e.athlete_id,
    ).group_by(_e.athlete_id, _e.day, _e.week_start),
    "one row per athlete and local date with an activity, a weigh-in or a nutrition log; weight_kg is the mean "
    "of the day's weigh-ins, kcal is null (not 0) on a day without a nutrition log",
)

training_week = View(
    "training_week",
    sa.select(
        _e.week_start,
        _count(_e.activity_id).label("activities"),
        _total(_e.distance_km, sa.Float).label("distance_km"),
        _total(_e.moving_time_s, sa.Integer).label("moving_time_s"),
        _total(_e.elevation_m, sa.Float).label("elevation_m"),
        sa.type_coerce(sa.func.avg(_e.weight_kg), sa.Float).label("avg_weight_kg"),
        _count(_e.weight_kg).label("weighins"),
        sa.type_coerce(sa.func.avg(_e.kcal), sa.Float).label("avg_kcal"),
        _count(_e.kcal).label("logged_days"),
        _e.athlete_id,
    ).group_by(_e.athlete_id, _e.week_start),
    "one row per athlete and ISO week (Monday first, local dates) with any data; avg_weight_kg is the mean of the "
    "week's weigh-ins, avg_kcal the mean over the days with a nutrition log (logged_days)",
)

_ta = training_activity.table.c
training_week_sport = View(
    "training_week_sport",
    sa.select(
        _ta.week_start,
        _ta.sport_type,
        _count(_ta.id).label("activities"),
        _total(_ta.distance_km, sa.Float).label("distance_km"),
        _total(_ta.moving_time_s, sa.Integer).label("moving_time_s"),
        _total(_ta.elevation_m, sa.Float).label("elevation_m"),
        _ta.athlete_id,
    ).group_by(_ta.athlete_id, _ta.week_start, _ta.sport_type),
    "activities per athlete, ISO week (local dates) and sport type",
)


# --- sync_health, token_health, rate_limit_health ---------------------------------------------------------

def _sync_health() -> sa.Select:
    r, q = sync_run.c, quarantine.c
    # the distinct sources of sync_run by a loose index scan (one index probe per source, not a scan of
    # a row per hourly batch: 26,000 a year), with those only in quarantine
    seen = sa.select(sa.func.min(r.source).label("source")).cte("seen_source", recursive=True)
    after = sync_run.alias("after")
    seen = seen.union_all(
        sa.select(sa.select(sa.func.min(after.c.source)).where(after.c.source > seen.c.source).scalar_subquery())
        .where(seen.c.source.is_not(None)))
    source = sa.union(sa.select(seen.c.source).where(seen.c.source.is_not(None)), sa.select(q.source)).subquery("s")
    # every athlete with every source, kept where the athlete has a run or a quarantined record of it
    who = athlete.alias("who")
    last = (sa.select(r.batch_id, r.finished_at, r.window_start, r.window_end, r.extracted, r.inserted,
                      r.updated, r.unchanged, r.deleted, r.quarantined)
            .where(r.source == source.c.source, r.athlete_id == who.c.id)
            .order_by(r.finished_at.desc(), r.batch_id.desc()).limit(1).lateral("last_run"))
    recent = sync_run.alias("recent")
    runs_last_24h = (sa.select(_count(sa.literal_column("*")))
                     .where(recent.c.source == source.c.source, recent.c.athlete_id == who.c.id,
                            recent.c.finished_at > sa.func.now() - sa.literal_column("interval '24 hours'"))
                     .scalar_subquery())
    held = quarantine.alias("held")
    quarantined_now = sa.select(_count(sa.literal_column("*"))).where(held.c.source == source.c.source,
                                                                      held.c.athlete_id == who.c.id)
    return sa.select(
        source.c.source,
        last.c.batch_id.label("last_batch_id"),
        last.c.finished_at.label("last_finished_at"),
        last.c.window_start, last.c.window_end, last.c.extracted, last.c.inserted, last.c.updated,
        last.c.unchanged, last.c.deleted, last.c.quarantined,
        runs_last_24h.label("runs_last_24h"),
        quarantined_now.scalar_subquery().label("quarantined_now"),
        who.c.id.label("athlete_id"),
    ).select_from(source.join(who, sa.true()).outerjoin(last, sa.true())).where(
        # the pairs with something to show: an athlete who never used a provider has no row for its sources
        sa.or_(last.c.batch_id.is_not(None),
               sa.exists().where(held.c.source == source.c.source, held.c.athlete_id == who.c.id)))


sync_health = View(
    "sync_health",
    _sync_health(),
    "per source seen in sync_run or quarantine, and athlete: the latest loaded batch (by finished_at) and what "
    "it did, the batches of the last 24 hours and the records in quarantine now; no payloads",
)

_t = oauth_token.c
token_health = View(
    "token_health",
    sa.select(
        _t.token_key,
        sa.type_coerce(sa.func.split_part(_t.token_key, ":", 1), sa.Text).label("conn_type"),
        sa.type_coerce(sa.func.regexp_replace(sa.func.substr(_t.token_key, sa.func.strpos(_t.token_key, ":") + 1),
                                              ":athlete-[0-9]+$", ""), sa.Text).label("conn_id"),
        _t.updated_at.label("refreshed_at"),
        _t.expires_at,
        _t.athlete_id,
    ),
    "when each stored OAuth token was last refreshed and when its access token expires; never a token value",
)

_r = api_rate_limit.c

def _next_boundary(seconds: str) -> sa.ColumnElement:
    """The first multiple of ``seconds`` (SQL) since the epoch after ``seen_at``: when that window resets."""
    return sa.literal_column(
        f"to_timestamp((floor(extract(epoch FROM api_rate_limit.seen_at) / {seconds}) + 1) * {seconds})",
        sa.DateTime(timezone=True))


rate_limit_health = View(
    "rate_limit_health",
    sa.select(
        _r.api, _r.bucket, _r.window_usage, _r.window_limit, _r.daily_usage, _r.daily_limit, _r.seen_at,
        _r.window_seconds,
        _next_boundary("api_rate_limit.window_seconds").label("window_resets_at"),
        _next_boundary("86400").label("daily_resets_at"),
    ),
    "the rate-limit usage an API's headers last showed, per bucket; the usage counts are those of the "
    "window and day of seen_at (they reset at window_resets_at and daily_resets_at, UTC)",
)

#: every view, in dependency order: a view reads only tables and views listed before it
VIEWS: list[View] = [training_activity, training_day, training_week, training_week_sport, sync_health,
                     token_health, rate_limit_health]

"""The one definition of the fitness database (SQLAlchemy Core).

The DDL (:mod:`fitness_pipeline.ddl`), the loader and the tests all read these
``Table`` objects. Column names of ``strava_activity`` are the ones the seed
article's users already query; their types are fixed here (text names of any
length, ``timestamptz`` UTC instants, numeric ``upload_id``, integer seconds).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData()

#: Columns every loaded table gets; the loader sets them, never the caller.
FIRST_SEEN = "first_seen"
LAST_TIME = "last_time"
DELETED_AT = "deleted_at"
MANAGED_COLUMNS = frozenset({FIRST_SEEN, LAST_TIME, DELETED_AT})


def _managed_columns(*, deletable: bool = True) -> list[sa.Column]:
    deleted = [sa.Column(DELETED_AT, sa.DateTime(timezone=True),
                         comment="set when the record vanished upstream inside a reconciled window; "
                                 "cleared if it comes back")] if deletable else []
    return [*deleted,
        sa.Column(FIRST_SEEN, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
                  comment="when this row was first loaded"),
        sa.Column(LAST_TIME, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(),
                  comment="when this row was last inserted or really changed (the seed's column)"),
    ]


#: the athlete of every row loaded before there were several (and of a deployment with one): ``athlete.id`` 1
DEFAULT_ATHLETE_ID = 1
DEFAULT_ATHLETE_NAME = "default"
#: the column naming a row's athlete in every table of personal data
ATHLETE_ID = "athlete_id"

athlete = sa.Table(
    "athlete",
    metadata,
    sa.Column("id", sa.Integer, sa.Identity(start=2), primary_key=True,
              comment=f"our own id; {DEFAULT_ATHLETE_ID} is the default athlete (the Connections' own tokens)"),
    sa.Column("name", sa.Text, nullable=False, unique=True, comment="display name, unique; used by the commands"),
    sa.Column("strava_athlete_id", sa.BigInteger, unique=True, comment="the Strava athlete who authorized"),
    sa.Column("google_user_id", sa.Text, unique=True, comment="the Google Health user who authorized"),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true(),
              comment="synced by fitness_sync; false once disabled or its authorization was refused for good"),
    sa.Column("inactive_reason", sa.Text, comment="why the athlete is inactive, and what to do"),
    sa.Column("airflow_users", pg.ARRAY(sa.Text), comment="Airflow users who may see this athlete's training "
              "page; null: every user, while this is the only athlete"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    comment="the people whose data this database keeps; tokens in oauth_token, rows carry athlete_id",
)


def athlete_column() -> sa.Column:
    """The ``athlete_id`` of a table of personal data; rows from before there were athletes are the default's.
    The last column, in a new database as in a migrated one (where it was added): ``SELECT *`` reads the same."""
    return sa.Column(ATHLETE_ID, sa.Integer, nullable=False, server_default=str(DEFAULT_ATHLETE_ID),
                     comment="athlete.id of the person this row is about")


def key_per_athlete(*columns: str) -> sa.PrimaryKeyConstraint:
    """A primary key unique per athlete: ``(athlete_id, *columns)``."""
    return sa.PrimaryKeyConstraint(ATHLETE_ID, *columns)


def record_key(table: sa.Table) -> sa.Column:
    """The column of ``table``'s key that names a record of one athlete (the key without ``athlete_id``)."""
    (column,) = [c for c in table.primary_key.columns if c.name != ATHLETE_ID]
    return column


def _effort_columns() -> list[sa.Column]:
    """What Strava measures of an activity and of each of its laps, with the same names and units."""
    return [
        sa.Column("distance", sa.Float, comment="metres"),
        sa.Column("moving_time", sa.Integer, comment="seconds"),
        sa.Column("elapsed_time", sa.Integer, comment="seconds"),
        sa.Column("total_elevation_gain", sa.Float, comment="metres"),
        sa.Column("average_speed", sa.Float, comment="m/s"),
        sa.Column("max_speed", sa.Float, comment="m/s"),
        sa.Column("average_cadence", sa.Float),
        sa.Column("average_heartrate", sa.Float, comment="bpm; null without a heart-rate sensor"),
        sa.Column("max_heartrate", sa.Float, comment="bpm; null without a heart-rate sensor"),
        sa.Column("average_watts", sa.Float),
    ]


strava_activity = sa.Table(
    "strava_activity",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False,
              comment="Strava activity id (unique across athletes)"),
    sa.Column("owner", sa.BigInteger, comment="athlete.id"),
    sa.Column("activity_type", sa.Text, comment="Strava's deprecated `type`"),
    sa.Column("sport_type", sa.Text, comment="Strava's `sport_type`; new values pass through unchanged"),
    sa.Column("name", sa.Text),
    *_effort_columns(),
    sa.Column("kilojoules", sa.Float),
    sa.Column("start_date", sa.DateTime(timezone=True), nullable=False, comment="UTC instant"),
    sa.Column("start_date_local", sa.DateTime(timezone=False),
              comment="athlete's wall-clock time, not shifted (Strava writes it with a misleading Z)"),
    sa.Column("timezone", sa.Text, comment='e.g. "(GMT-08:00) America/Los_Angeles"'),
    sa.Column("utc_offset", sa.Float, comment="seconds east of UTC at start"),
    sa.Column("upload_id", sa.Numeric(30, 0), comment="numeric: real values overflow BIGINT"),
    sa.Column("external_id", sa.Text),
    sa.Column("device_name", sa.Text),
    sa.Column("gear_id", sa.Text),
    sa.Column("manual", sa.Boolean),
    sa.Column("private", sa.Boolean),
    sa.Column("visibility", sa.Text),
    sa.Column("trainer", sa.Boolean),
    sa.Column("commute", sa.Boolean),
    sa.Column("workout_type", sa.Integer),
    sa.Column("raw", pg.JSONB, nullable=False, comment="the SummaryActivity exactly as the API sent it"),
    *_managed_columns(),
    athlete_column(),
    sa.Index("ix_strava_activity_start_date", "start_date"),
    sa.Index("ix_strava_activity_athlete_start_date", ATHLETE_ID, "start_date"),
    sa.Index("ix_strava_activity_owner_start_date", "owner", "start_date"),
    comment="Strava activities (SummaryActivity), one row per activity id",
)


#: a row that hangs off a Strava activity goes with it (deleted for good by the retention or a purge)
def activity_reference(column: str = "activity_id", **kwargs: object) -> sa.Column:
    return sa.Column(column, sa.BigInteger, sa.ForeignKey("strava_activity.id", ondelete="CASCADE"),
                     nullable=False, comment="strava_activity.id", **kwargs)


strava_activity_detail = sa.Table(
    "strava_activity_detail",
    metadata,
    activity_reference(primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, comment="the athlete's own text about the activity"),
    sa.Column("calories", sa.Float, comment="kcal burned, as Strava estimates them"),
    sa.Column("device_name", sa.Text, comment="the recording device, e.g. Garmin Forerunner 965"),
    sa.Column("gear_id", sa.Text, comment="strava_gear.id of the shoes or bike used"),
    sa.Column("lap_count", sa.Integer, nullable=False, comment="rows in strava_lap for this activity"),
    *_managed_columns(deletable=False),
    athlete_column(),
    comment="what GET /activities/{id} (DetailedActivity) adds to a listed activity; read once per activity "
            "(and again on a webhook event); first_seen is when it was read",
)

strava_gear = sa.Table(
    "strava_gear",
    metadata,
    sa.Column("id", sa.Text, nullable=False, comment="Strava's gear id, e.g. g12345 (shoes) or b12345 (bike)"),
    sa.Column("name", sa.Text),
    sa.Column("distance", sa.Float, comment="metres on this gear, when it was last read"),
    sa.Column("is_primary", sa.Boolean, comment="the athlete's default gear (Strava's `primary`)"),
    *_managed_columns(deletable=False),
    athlete_column(),
    key_per_athlete("id"),
    comment="the athlete's shoes and bikes, from the `gear` of their detailed activities",
)

strava_lap = sa.Table(
    "strava_lap",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False, comment="Strava's lap id"),
    activity_reference(),
    sa.Column("lap_index", sa.Integer, nullable=False, comment="1 for the first lap"),
    sa.Column("name", sa.Text),
    sa.Column("start_date", sa.DateTime(timezone=True), comment="UTC instant"),
    sa.Column("start_date_local", sa.DateTime(timezone=False), comment="athlete's wall clock, not shifted"),
    *_effort_columns(),
    *_managed_columns(deletable=False),
    athlete_column(),
    sa.Index("ix_strava_lap_activity_id", "activity_id", "lap_index"),
    comment="the laps of detailed activities; an activity's laps are replaced when it is read again",
)


def local_week(day: sa.ColumnElement) -> sa.ColumnElement:
    """The Monday of ``day``'s ISO week, as a date. ``day`` is a date or a naive timestamp, cast to ``timestamp``
    (not ``timestamptz``, which a date would become): the result never depends on the session's time zone and
    the expression is immutable, so it can be indexed."""
    if not isinstance(day.type, sa.DateTime):
        day = sa.cast(day, sa.DateTime(timezone=False))
    return sa.cast(sa.func.date_trunc("week", day), sa.Date)


#: the local date and ISO week of an activity, as the views compute them (and filter on: indexed)
ACTIVITY_LOCAL_DAY = sa.cast(strava_activity.c.start_date_local, sa.Date)
ACTIVITY_LOCAL_WEEK = local_week(strava_activity.c.start_date_local)
sa.Index("ix_strava_activity_local_day", ACTIVITY_LOCAL_DAY)
sa.Index("ix_strava_activity_local_week", ACTIVITY_LOCAL_WEEK)

fitbit_weight = sa.Table(
    "fitbit_weight",
    metadata,
    sa.Column("id", sa.Numeric(20, 0), autoincrement=False,
              comment="the data point's id (last segment of its name; can exceed BIGINT), unique per athlete"),
    sa.Column("weight", sa.Float, nullable=False, comment="kilograms (the API sends grams)"),
    sa.Column("bmi", sa.Float, comment="kg/m² with the latest height at that time; null without a height"),
    sa.Column("fat", sa.Float, comment="body-fat percent of the body-fat point measured with it (within 60 s)"),
    sa.Column("record_date", sa.Date, nullable=False, comment="local (civil) date of the measurement"),
    sa.Column("record_time", sa.Time, comment="local (civil) time of the measurement"),
    sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False, comment="UTC instant"),
    sa.Column("utc_offset", sa.Integer, comment="seconds east of UTC at the measurement"),
    sa.Column("platform", sa.Text, comment="FITBIT, HEALTH_CONNECT, ..."),
    sa.Column("recording_method", sa.Text, comment="MANUAL, PASSIVELY_MEASURED, ..."),
    sa.Column("data_point_name", sa.Text, nullable=False, comment="users/<id>/dataTypes/weight/dataPoints/<id>"),
    sa.Column("raw", pg.JSONB, nullable=False),
    *_managed_columns(),
    athlete_column(),
    key_per_athlete("id"),
    sa.Index("ix_fitbit_weight_measured_at", "measured_at"),
    sa.Index("ix_fitbit_weight_record_date", "record_date"),
    comment="body weight from the Google Health API (Fitbit), one row per data point",
)

fitbit_height = sa.Table(
    "fitbit_height",
    metadata,
    sa.Column("id", sa.Numeric(20, 0), autoincrement=False),
    sa.Column("height_mm", sa.Integer, nullable=False),
    sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("data_point_name", sa.Text, nullable=False),
    sa.Column("raw", pg.JSONB, nullable=False),
    *_managed_columns(deletable=False),
    athlete_column(),
    key_per_athlete("id"),
    comment="height data points; the BMI of fitbit_weight uses the latest one at each weighing",
)

fitbit_calories = sa.Table(
    "fitbit_calories",
    metadata,
    sa.Column("record_date", sa.Date, nullable=False, comment="local (civil) date; days without logs have no row"),
    sa.Column("id", sa.BigInteger, nullable=False,
              comment="the seed's id: epoch seconds of record_date at 00:00 UTC (unique per athlete)"),
    sa.Column("calories", sa.Float, nullable=False, comment="kcal eaten that day (sum of nutrition logs)"),
    sa.Column("raw", pg.JSONB, nullable=False),
    *_managed_columns(),
    athlete_column(),
    key_per_athlete("record_date"),
    sa.UniqueConstraint(ATHLETE_ID, "id", name="uq_fitbit_calories_athlete_id_id"),
    comment="calories eaten per athlete and local date (Google Health API nutrition-log daily roll-up)",
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("source", sa.Text, nullable=False, comment="e.g. strava_activity"),
    sa.Column("record_key", sa.Text, nullable=False, comment="the record's id, or a hash when it has none"),
    sa.Column("reason", sa.Text, nullable=False),
    # text, not jsonb: jsonb rejects some payloads (\u0000) that we must still keep
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("times_seen", sa.Integer, nullable=False, server_default="1"),
    athlete_column(),
    key_per_athlete("source", "record_key"),
    comment="records that could not be loaded, with the reason; removed once a valid version loads",
)

oauth_token = sa.Table(
    "oauth_token",
    metadata,
    sa.Column("token_key", sa.Text, primary_key=True,
              comment="<conn_type>:<conn_id> (the default athlete's), <conn_type>:<conn_id>:athlete-<id>"),
    sa.Column("refresh_token", sa.Text, nullable=False),
    sa.Column("access_token", sa.Text),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("seed_fingerprint", sa.Text, nullable=False,
              comment="sha256 of the Connection's refresh token this row started from"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    athlete_column(),
    comment="newest OAuth tokens per connection and athlete; rows are locked while refreshing",
)

sync_run = sa.Table(
    "sync_run",
    metadata,
    sa.Column("batch_id", sa.Text, primary_key=True, comment="<dag run id>/<source>"),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("window_start", sa.DateTime(timezone=True)),
    sa.Column("window_end", sa.DateTime(timezone=True)),
    sa.Column("extracted", sa.Integer, nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("inserted", sa.Integer, nullable=False),
    sa.Column("updated", sa.Integer, nullable=False),
    sa.Column("unchanged", sa.Integer, nullable=False),
    sa.Column("deleted", sa.Integer, nullable=False, server_default="0", comment="rows marked deleted"),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    athlete_column(),
    sa.Index("ix_sync_run_source_finished_at", "source", "finished_at"),
    sa.Index("ix_sync_run_source_athlete_finished_at", "source", ATHLETE_ID, "finished_at"),
    comment="one row per loaded batch: what each run did",
)

api_rate_limit = sa.Table(
    "api_rate_limit",
    metadata,
    sa.Column("api", sa.Text, primary_key=True, comment="the hook's connection type, e.g. strava"),
    sa.Column("bucket", sa.Text, primary_key=True, comment="read (X-ReadRateLimit) or overall (X-RateLimit)"),
    sa.Column("window_usage", sa.Integer, nullable=False, comment="requests used in the short window"),
    sa.Column("window_limit", sa.Integer, nullable=False),
    sa.Column("daily_usage", sa.Integer, nullable=False, comment="requests used today (UTC)"),
    sa.Column("daily_limit", sa.Integer, nullable=False),
    sa.Column("window_seconds", sa.Integer, comment="length of the short window (Strava: 900)"),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False,
              comment="when the response carrying these headers arrived"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    comment="the rate-limit usage an API's response headers last showed, per bucket (no personal data)",
)

api_budget = sa.Table(
    "api_budget",
    metadata,
    sa.Column("budget_key", sa.Text, primary_key=True,
              comment="the API application whose limits these are, e.g. strava:<client id>:900"),
    sa.Column("window_index", sa.BigInteger, nullable=False, comment="which short window (epoch // its length)"),
    sa.Column("window_used", sa.Integer, nullable=False, comment="reads reserved or reported in that window"),
    sa.Column("window_limit", sa.Integer, nullable=False),
    sa.Column("day_index", sa.Integer, nullable=False, comment="which UTC day (epoch // 86400)"),
    sa.Column("day_used", sa.Integer, nullable=False, comment="reads reserved or reported that day"),
    sa.Column("day_limit", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    comment="one rate-limit budget per API application, shared by every task, worker and run: each request "
            "is reserved here before it is sent (no personal data)",
)

webhook_event = sa.Table(
    "webhook_event",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("provider", sa.Text, nullable=False, comment="strava or google"),
    sa.Column("dedup_key", sa.Text, nullable=False,
              comment="sha256 of what makes an event itself (a delivery repeated by the provider has the same); "
                      "unique among pending events: a Google notification has no id, and the same one may come "
                      "again for a later change"),
    sa.Column("payload", sa.Text, nullable=False, comment="the event's body as received (text: kept byte for byte)"),
    sa.Column("account_id", sa.Text, comment="whose: Strava's owner_id, Google's healthUserId (what a purge finds)"),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("claimed_at", sa.DateTime(timezone=True),
              comment="when a worker took the event to apply it (taken again once older than 10 minutes)"),
    sa.Column("processed_at", sa.DateTime(timezone=True), comment="when the event was applied; null: pending"),
    sa.Column("error", sa.Text, comment="why it could not be applied (then it is also in quarantine)"),
    sa.Index("ix_webhook_event_pending", "id", postgresql_where=sa.text("processed_at IS NULL")),
    sa.Index("uq_webhook_event_pending_dedup_key", "dedup_key", unique=True,
             postgresql_where=sa.text("processed_at IS NULL")),
    comment="events pushed by the providers (Strava webhooks, Google Health notifications), appended by the "
            "receiver after validation; applied by the event-driven sync",
)

raw_record = sa.Table(
    "raw_record",
    metadata,
    sa.Column("batch_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("payload", sa.Text, nullable=False, comment="one API record as JSON text"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    comment="landing area between extract and transform; emptied by load",
)


extract_cursor = sa.Table(
    "extract_cursor",
    metadata,
    sa.Column("batch_id", sa.Text, primary_key=True),
    sa.Column("after_epoch", sa.BigInteger, nullable=False,
              comment="a resumed try lists from here (the newest landed start, minus one second)"),
    sa.Column("landed", sa.Integer, nullable=False, comment="records landed so far"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("window_start", sa.DateTime(timezone=True),
              comment="the listing's window: a new run of the same window may take this progress over"),
    sa.Column("window_end", sa.DateTime(timezone=True)),
    comment="progress of an unfinished extract, so a retried or rescheduled try (or a new run of the same window) "
            "continues where it stopped",
)


#: constraints of earlier versions that an upgrade drops, by table (ensure_schema; idempotent)
RETIRED_CONSTRAINTS = {
    # dedup_key was unique for good: a Google notification repeated for a later change was dropped
    "webhook_event": ("webhook_event_dedup_key_key",),
}


def staging_table_for(target: sa.Table) -> sa.Table:
    """The staging table between transform and load: the target's data columns plus the batch."""
    columns = [sa.Column("batch_id", sa.Text, nullable=False), sa.Column("seq", sa.Integer, nullable=False)]
    # athlete_id keeps its default: a batch staged before the upgrade that added it loads as the default athlete's
    columns += [sa.Column(c.name, c.type, server_default=c.server_default.arg if c.name == ATHLETE_ID else None)
                for c in data_columns(target)]
    columns.append(sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()))
    return sa.Table(
        f"stage_{target.name}",
        metadata,
        *columns,
        sa.PrimaryKeyConstraint("batch_id", "seq"),
        comment=f"rows for {target.name} waiting to be loaded; emptied by load",
    )


def data_columns(table: sa.Table) -> list[sa.Column]:
    """The columns a transform fills (everything but the loader-managed timestamps)."""
    return [c for c in table.columns if c.name not in MANAGED_COLUMNS]


#: Staging tables by target name. Built here (not by the sources) so that the DDL creates them with the
#: tables; a table added later (a new source's) gets its staging table from :func:`staging_for`.
STAGING = {t.name: staging_table_for(t) for t in (strava_activity, strava_activity_detail, strava_gear, strava_lap,
                                                  fitbit_weight, fitbit_height, fitbit_calories)}


def staging_for(target: sa.Table) -> sa.Table:
    """The staging table of ``target`` (defined in :data:`metadata` on first use)."""
    if target.name not in STAGING:
        STAGING[target.name] = staging_table_for(target)
    return STAGING[target.name]

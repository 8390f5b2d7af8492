"""The bodies of the ``fitness_sync`` DAG's tasks, kept out of the DAG file so it parses fast.

Data moves between tasks through the fitness database, never through XCom:
extract lands raw API records in ``raw_record``; transform turns them into rows in
the source's staging table (bad records to ``quarantine``); load merges the staged
rows into the target in one transaction and records the run in ``sync_run``. Each
task returns a small dict of counts and keys (the XCom). Every step can be retried:
it first removes what an earlier try of the same batch left behind.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline import windows
from fitness_pipeline.db import copy_rows, execute, transaction
from fitness_pipeline.schema import (
    STAGING,
    extract_cursor,
    fitbit_calories,
    fitbit_height,
    fitbit_weight,
    raw_record,
    strava_activity,
    sync_run,
)
from fitness_pipeline.transform import (
    TransformResult,
    fitbit_calories_row,
    fitbit_height_row,
    fitbit_weight_batch,
    google_point_key,
    rollup_key,
    strava_activity_row,
    transform_batch,
)
from fitness_pipeline.windows import Window, extraction_window

log = logging.getLogger(__name__)

FITNESS_DB_CONN_ID = "fitness_db"
STRAVA_CONN_ID = "strava_default"
FITBIT_CONN_ID = "fitbit_default"
#: sources whose whole history the daily run re-lists to catch old deletions (calories would cost
#: a roll-up call per 90 days of history, so they are reconciled inside the normal window only)
FULL_RECONCILE_SOURCES = frozenset({"strava", "fitbit_weight"})
#: civil dates are at most this far from UTC (UTC+14 … UTC-12)
MAX_UTC_OFFSET = dt.timedelta(hours=14)
#: raw and staged rows of batches that never finished are removed after this long
STALE_AFTER = dt.timedelta(days=7)
_READ_CHUNK = 5000


@dataclass(frozen=True)
class Source:
    """A loaded table, and how a chunk of landed records becomes its rows.

    ``to_rows(cursor, records)`` may read reference data through ``cursor`` (heights for BMI).
    ``whole_batch``: the records must be transformed together (weights with their body fat).
    """

    name: str
    target: sa.Table
    to_rows: Callable[[Any, list[Any]], TransformResult]
    whole_batch: bool = False

    @property
    def staging(self) -> sa.Table:
        return STAGING[self.target.name]


def _known_heights(cur: Any) -> list[tuple[dt.datetime, int]]:
    execute(cur, sa.select(fitbit_height.c.measured_at, fitbit_height.c.height_mm))
    return [(measured_at, height_mm) for measured_at, height_mm in cur.fetchall()]


SOURCES = {source.name: source for source in (
    Source("strava_activity", strava_activity, lambda cur, records: transform_batch(records, strava_activity_row)),
    Source("fitbit_weight", fitbit_weight, lambda cur, records: fitbit_weight_batch(records, _known_heights(cur)),
           whole_batch=True),
    Source("fitbit_calories", fitbit_calories,
           lambda cur, records: transform_batch(records, fitbit_calories_row, key=rollup_key)),
)}


def connect(conn_id: str = FITNESS_DB_CONN_ID) -> Any:
    """A DB-API connection to the fitness database through ``PostgresHook``."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=conn_id).get_conn()


def run_window(params: dict[str, Any] | None, data_interval_start: dt.datetime | None,
               data_interval_end: dt.datetime | None, dag_run: Any, source: str = "strava") -> Window:
    """The window ``source`` fetches in the current run; a function of the run and its params only.

    Normally the data interval widened by ``lookback_hours``. The run whose interval ends at
    00:00 UTC reconciles the whole history of the sources in :data:`FULL_RECONCILE_SOURCES`
    (param ``daily_full_reconcile``). Params ``history_start``/``history_end`` import a range.
    """
    params = params or {}
    lookback = dt.timedelta(hours=float(params.get("lookback_hours") or 0))
    run_after = getattr(dag_run, "run_after", None) or getattr(dag_run, "execution_date", None)
    base = extraction_window(data_interval_start, data_interval_end, run_after, lookback)
    full = bool(params.get("daily_full_reconcile", True)) and source in FULL_RECONCILE_SOURCES and (
        base.end.hour == 0 and data_interval_end is not None)
    return windows.run_window(base, history_start=params.get("history_start"),
                              history_end=params.get("history_end"), full_history=full)


def wanted(params: dict[str, Any] | None, source: str) -> bool:
    """Whether param ``sources`` (default: all) includes ``source``."""
    sources = (params or {}).get("sources")
    return not sources or source in sources


def batch_id(run_id: str, source: str) -> str:
    return f"{run_id}/{source}"


# --- ensure_schema -------------------------------------------------------------------------


def ensure_schema(conn_id: str = FITNESS_DB_CONN_ID) -> dict[str, Any]:
    """Create or upgrade the tables, and clear landing/staging rows of long-dead batches."""
    from fitness_pipeline.ddl import ensure_schema as apply_schema

    with closing(connect(conn_id)) as conn:
        changes = apply_schema(conn)
        with transaction(conn) as cur:
            cutoff = sa.func.now() - STALE_AFTER
            for table in (raw_record, extract_cursor, *STAGING.values()):
                execute(cur, sa.delete(table).where(table.c.created_at < cutoff))
    return {"created_tables": changes.created_tables, "added_columns": changes.added_columns,
            "altered_columns": changes.altered_columns}


# --- extract -------------------------------------------------------------------------------


def land_records(cur: Any, batch: str, pages: Iterable[list[Any]]) -> int:
    """Replace the batch's landed records with ``pages``, page by page. Returns the record count."""
    execute(cur, sa.delete(raw_record).where(raw_record.c.batch_id == batch))
    count = 0
    for page in pages:
        count += land_page(cur, batch, page, count)
    return count


def land_page(cur: Any, batch: str, page: list[Any], start_seq: int) -> int:
    # ensure_ascii: any odd string (a lone surrogate) survives landing and is judged by transform
    rows = ((batch, start_seq + i, json.dumps(record)) for i, record in enumerate(page))
    return copy_rows(cur, raw_record.name, ["batch_id", "seq", "payload"], rows)


def extract_strava(run_id: str, window: Window, strava_conn_id: str = STRAVA_CONN_ID,
                   db_conn_id: str = FITNESS_DB_CONN_ID) -> dict[str, Any]:
    """Land every activity that started inside ``window``, committing page by page.

    A try that stopped (rate limit, crash, kill) leaves its progress in ``extract_cursor``;
    the next try lists on from the newest landed start instead of from the beginning, so a
    years-long history import never re-fetches what it already has. Duplicates at the seam
    (activities sharing that second) are merged away by the load.
    """
    from fitness_pipeline.hooks.strava import StravaHook

    batch = batch_id(run_id, "strava_activity")
    hook = StravaHook(strava_conn_id)
    try:
        with closing(connect(db_conn_id)) as conn:
            with transaction(conn) as cur:
                execute(cur, sa.select(extract_cursor.c.after_epoch, extract_cursor.c.landed)
                        .where(extract_cursor.c.batch_id == batch))
                progress = cur.fetchone()
                if progress is None:
                    execute(cur, sa.delete(raw_record).where(raw_record.c.batch_id == batch))
            after_epoch, landed = progress or (int(window.start.timestamp()), 0)
            if progress:
                log.info("strava_activity: resuming after %d landed activities", landed)
            after = dt.datetime.fromtimestamp(max(after_epoch, int(window.start.timestamp())), dt.UTC)
            for page in hook.iter_activity_pages(after, window.end):
                with transaction(conn) as cur:
                    landed += land_page(cur, batch, page, landed)
                    after_epoch = max(after_epoch, _newest_start(page) - 1)
                    insert = pg.insert(extract_cursor).values(batch_id=batch, after_epoch=after_epoch, landed=landed)
                    execute(cur, insert.on_conflict_do_update(
                        index_elements=[extract_cursor.c.batch_id],
                        set_={"after_epoch": insert.excluded.after_epoch, "landed": insert.excluded.landed}))
            with transaction(conn) as cur:  # complete: a later re-run of this batch starts afresh
                execute(cur, sa.delete(extract_cursor).where(extract_cursor.c.batch_id == batch))
    finally:
        hook.close()
    log.info("strava_activity: landed %d activities that started in [%s, %s)", landed, window.start, window.end)
    # Strava's after/before are exclusive whole seconds: reconcile exactly what was asked for
    reconcile = {"column": "start_date", "lower": _epoch_iso(window.start), "upper": _epoch_iso(window.end),
                 "lower_inclusive": False}
    return {"batch_id": batch, "source": "strava_activity", "extracted": landed, "window": window.as_dict(),
            "reconcile": reconcile}


def _newest_start(page: list[Any]) -> int:
    """Epoch seconds of the latest ``start_date`` in a page, if the page is in ascending order
    (as Strava lists with ``after``); 0 otherwise, so a resumed try re-lists rather than skips."""
    starts = []
    for activity in page:
        try:
            start = dt.datetime.fromisoformat(activity["start_date"])
        except (TypeError, KeyError, ValueError):
            continue  # transform will quarantine it; the cursor just does not move for it
        if start.tzinfo is not None:
            starts.append(int(start.timestamp()))
    return starts[-1] if starts and starts == sorted(starts) else 0


def extract_fitbit_weight(run_id: str, window: Window, fitbit_conn_id: str = FITBIT_CONN_ID,
                          db_conn_id: str = FITNESS_DB_CONN_ID) -> dict[str, Any]:
    """Land the weight and body-fat points measured inside ``window``; refresh heights daily."""
    from fitness_pipeline.hooks.fitbit import FitbitHook
    from fitness_pipeline.loader import quarantine_records, upsert_rows
    from fitness_pipeline.transform import BODY_FAT_MATCH_SECONDS

    batch = batch_id(run_id, "fitbit_weight")
    hook = FitbitHook(fitbit_conn_id)
    margin = dt.timedelta(seconds=BODY_FAT_MATCH_SECONDS)
    try:
        with closing(connect(db_conn_id)) as conn, transaction(conn) as cur:
            # heights change rarely and cost a request: fetched by the run ending at midnight, or when none known
            if window.end.hour == 0 or not _known_heights(cur):
                heights = transform_batch(hook.list_samples("height", None, window.end), fitbit_height_row,
                                          key=google_point_key)
                upsert_rows(cur, fitbit_height, heights.rows)
                quarantine_records(cur, "fitbit_height", heights.rejected)
            # body fat first: a weighing's fat may sit just outside the window
            pages = [[{"dataType": "body-fat", "point": p}
                      for p in hook.list_samples("body-fat", window.start - margin, window.end + margin)],
                     [{"dataType": "weight", "point": p}
                      for p in hook.list_samples("weight", window.start, window.end)]]
            count = land_records(cur, batch, pages)
    finally:
        hook.close()
    log.info("fitbit_weight: landed %d weight and body-fat points measured in [%s, %s)", count, window.start,
             window.end)
    reconcile = {"column": "measured_at", "lower": window.start.isoformat(), "upper": window.end.isoformat(),
                 "lower_inclusive": True}
    return {"batch_id": batch, "source": "fitbit_weight", "extracted": count, "window": window.as_dict(),
            "reconcile": reconcile}


def extract_fitbit_calories(run_id: str, window: Window, fitbit_conn_id: str = FITBIT_CONN_ID,
                            db_conn_id: str = FITNESS_DB_CONN_ID) -> dict[str, Any]:
    """Land the daily calorie roll-ups of every civil date the window touches in any time zone."""
    from fitness_pipeline.hooks.fitbit import FitbitHook

    batch = batch_id(run_id, "fitbit_calories")
    first_day = (window.start - MAX_UTC_OFFSET).date()
    end_day = (window.end + MAX_UTC_OFFSET).date() + dt.timedelta(days=1)
    hook = FitbitHook(fitbit_conn_id)
    try:
        rollups = hook.daily_calories(first_day, end_day)
        with closing(connect(db_conn_id)) as conn, transaction(conn) as cur:
            count = land_records(cur, batch, [rollups])
    finally:
        hook.close()
    log.info("fitbit_calories: landed %d days with logs among civil dates [%s, %s)", count, first_day, end_day)
    reconcile = {"column": "record_date", "lower": first_day.isoformat(), "upper": end_day.isoformat(),
                 "lower_inclusive": True}
    return {"batch_id": batch, "source": "fitbit_calories", "extracted": count, "window": window.as_dict(),
            "reconcile": reconcile}


#: the DAG's task groups, each with its extract function
EXTRACTORS: dict[str, Callable[[str, Window], dict[str, Any]]] = {
    "strava": extract_strava,
    "fitbit_weight": extract_fitbit_weight,
    "fitbit_calories": extract_fitbit_calories,
}


def run_extract(source: str, run_id: str, window: Window) -> dict[str, Any]:
    """The extract task of ``source``. A rate limit that resets later than the hook will wait
    (``max_rate_limit_wait``) reschedules the task for the reset: it gives its worker slot back
    instead of sleeping in it, and the next try continues where this one stopped."""
    from fitness_pipeline.hooks.base import AuthorizationError, RateLimitError

    try:
        return EXTRACTORS[source](run_id, window)
    except AuthorizationError as error:
        from fitness_pipeline.compat import AirflowFailException

        # a person has to act (re-authorize, fix the client): retries would only repeat the refusal
        raise AirflowFailException(str(error)) from error
    except RateLimitError as error:
        from fitness_pipeline.compat import AIRFLOW_3, AirflowRescheduleException

        # Airflow 2 ignores reschedule_date for tasks that are not sensors (it would run the task
        # again at once and spend quota); an unknown reset (Google) is better served by backoff
        if not (AIRFLOW_3 and error.reset_known):
            raise
        log.warning("%s Rescheduled for %s.", error, error.retry_at)
        raise AirflowRescheduleException(reschedule_date=error.retry_at) from error


def _epoch_iso(value: dt.datetime) -> str:
    return dt.datetime.fromtimestamp(int(value.timestamp()), dt.UTC).isoformat()


def reconciled_range(target: sa.Table, spec: dict[str, Any]) -> sa.ColumnElement[bool]:
    """The rows of ``target`` inside the range an extract listed completely."""
    column = target.c[spec["column"]]
    parse = dt.date.fromisoformat if isinstance(column.type, sa.Date) else dt.datetime.fromisoformat
    lower, upper = parse(spec["lower"]), parse(spec["upper"])
    return sa.and_(column >= lower if spec["lower_inclusive"] else column > lower, column < upper)


# --- transform -----------------------------------------------------------------------------


def transform(extracted: dict[str, Any], db_conn_id: str = FITNESS_DB_CONN_ID) -> dict[str, Any]:
    """Turn the batch's landed records into staged rows; quarantine the ones that cannot load."""
    from fitness_pipeline.loader import quarantine_records, stage_rows

    source = SOURCES[extracted["source"]]
    batch = extracted["batch_id"]
    staged = rejected = 0
    with closing(connect(db_conn_id)) as conn, transaction(conn) as cur:
        execute(cur, sa.delete(source.staging).where(source.staging.c.batch_id == batch))
        chunk_size = None if source.whole_batch else _READ_CHUNK
        for payloads in _landed_chunks(conn, batch, chunk_size):
            result = source.to_rows(cur, [json.loads(p) for p in payloads])
            staged += stage_rows(cur, source.target, batch, result.rows, start_seq=staged)
            rejected += quarantine_records(cur, source.name, result.rejected)
    if rejected:
        log.warning("%s: %d records quarantined (see table quarantine)", source.name, rejected)
    log.info("%s: %d rows staged", source.name, staged)
    return {**extracted, "staged": staged, "quarantined": rejected}


def _landed_chunks(conn: Any, batch: str, size: int | None) -> Iterator[list[str]]:
    """The batch's landed payloads in order, ``size`` at a time or all at once (``None``).
    A server-side cursor keeps memory lean for big batches."""
    with closing(conn.cursor("landed_records")) as cur:
        execute(cur, sa.select(raw_record.c.payload).where(raw_record.c.batch_id == batch)
                .order_by(raw_record.c.seq))
        if size is None:
            if rows := cur.fetchall():
                yield [row[0] for row in rows]
            return
        while chunk := cur.fetchmany(size):
            yield [row[0] for row in chunk]


# --- load ----------------------------------------------------------------------------------


def load(transformed: dict[str, Any], max_deleted_share: float = 0.5,
         db_conn_id: str = FITNESS_DB_CONN_ID) -> dict[str, Any]:
    """Merge the staged batch into its table, mark what vanished upstream inside the listed
    range as deleted, and record the run, all in one transaction."""
    from fitness_pipeline.loader import (
        MassDeletionError,
        delete_staged,
        mark_deleted,
        merge_staged,
        release_quarantined,
    )

    source = SOURCES[transformed["source"]]
    batch = transformed["batch_id"]
    deleted = 0
    with closing(connect(db_conn_id)) as conn, transaction(conn) as cur:
        counts = merge_staged(cur, source.target, batch)
        if transformed.get("reconcile"):
            try:
                deleted = mark_deleted(cur, source.name, source.target, batch,
                                       reconciled_range(source.target, transformed["reconcile"]), max_deleted_share)
            except MassDeletionError as error:
                from fitness_pipeline.compat import AirflowFailException

                raise AirflowFailException(str(error)) from error  # a retry would see the same listing
        release_quarantined(cur, source.name, source.target, source.staging, batch)
        delete_staged(cur, source.staging, batch)
        execute(cur, sa.delete(raw_record).where(raw_record.c.batch_id == batch))
        window = transformed.get("window") or {}
        record = {
            "batch_id": batch, "source": source.name,
            "window_start": window.get("start"), "window_end": window.get("end"),
            "extracted": transformed["extracted"], "quarantined": transformed["quarantined"],
            "deleted": deleted, **counts.as_dict(),
        }
        insert = pg.insert(sync_run).values(**record)
        execute(cur, insert.on_conflict_do_update(
            index_elements=[sync_run.c.batch_id],
            set_={**{k: insert.excluded[k] for k in record if k != "batch_id"}, "finished_at": sa.func.now()}))
    log.info("%s: %d inserted, %d updated, %d unchanged, %d marked deleted, %d quarantined", source.name,
             counts.inserted, counts.updated, counts.unchanged, deleted, transformed["quarantined"])
    return {"source": source.name, "batch_id": batch, "quarantined": transformed["quarantined"], "deleted": deleted,
            **counts.as_dict()}

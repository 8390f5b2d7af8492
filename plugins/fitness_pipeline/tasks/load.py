"""The load step: merge a staged batch into its tables, reconcile deletions, record the run."""

from __future__ import annotations

import logging
from contextlib import closing
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline import sources
from fitness_pipeline.db import FITNESS_DB_CONN_ID, connect, execute, transaction
from fitness_pipeline.errors import NeedsPersonError, RetriableError, raise_for_airflow
from fitness_pipeline.handover import EVENT_RUN_PREFIX, Loaded, RunParams, Staged
from fitness_pipeline.schema import DEFAULT_ATHLETE_ID, extract_cursor, raw_record, staging_for, sync_run
from fitness_pipeline.sources import SourceSpec

log = logging.getLogger(__name__)


def load(staged: Staged, max_deleted_share: float = RunParams.max_deleted_share,
         db_conn_id: str = FITNESS_DB_CONN_ID, dag_id: str | None = None,
         retention_days: int | None = None) -> Loaded:
    """Merge the staged batch into its table (companion tables first), mark what vanished upstream
    inside the listed range as deleted, and record the run in ``sync_run``: all in one transaction,
    so a failure leaves every table as it was. Returns what the merge did.

    Then, with ``dag_id`` (inside Airflow), the hand-over rows other batches of this source left behind
    are removed once Airflow says their run has finished (:func:`clear_finished_batches`).

    With ``retention_days`` (the source's retention param), the athlete's rows older than that before the
    window's end are deleted for good in the same transaction (:func:`expire`).

    Errors leave as Airflow outcomes (:func:`fitness_pipeline.errors.airflow_outcome`): a refused
    mass deletion, or a batch that is gone, fails the task without retries.
    """
    spec = sources.get(staged.source)
    try:
        with closing(connect(db_conn_id)) as conn:
            if not staging_intact(conn, spec, staged):
                if (done := loaded_already(conn, staged)) is not None:
                    return done
                staged = restage(conn, spec, staged, db_conn_id)
            loaded = _merge(conn, spec, staged, max_deleted_share, retention_days)
            if dag_id is not None:
                clear_finished_batches(conn, spec, staged.batch_id, dag_id, staged.athlete_id)
            return loaded
    except Exception as error:
        raise_for_airflow(error)


def clear_finished_batches(conn: Any, spec: SourceSpec, batch: str, dag_id: str,
                           athlete_id: int = DEFAULT_ATHLETE_ID) -> int:
    """Remove what other batches of ``spec`` and ``athlete_id`` left in ``extract_cursor``, ``raw_record`` and the
    staging tables (a killed import, a failed load) once Airflow reports their run finished, or no longer knows
    it (deleted). A run still going (a backfill next to this one) keeps its rows, and so, when Airflow cannot be
    asked, does every run. An unfinished extract's landed pages stay for
    :data:`~fitness_pipeline.tasks.strava.ADOPT_WITHIN` so that a new run of its window can take them over. Never
    fails the load: a problem is logged. Returns the rows removed."""
    from fitness_pipeline.compat import dag_run_finished
    from fitness_pipeline.tasks.extract import batches_of
    from fitness_pipeline.tasks.strava import ADOPT_WITHIN

    # the cursor first: a take-over (adopt_progress) locks it before the landed rows, so must this
    tables = [extract_cursor, raw_record, *(staging_for(t) for t in (spec.target, *spec.companion_tables()))]
    removed = 0
    try:
        with transaction(conn) as cur:
            others: set[str] = set()
            for table in tables:
                execute(cur, sa.select(table.c.batch_id).distinct().where(
                    batches_of(spec, table.c.batch_id, athlete_id), table.c.batch_id != batch))
                others.update(row[0] for row in cur.fetchall())
            execute(cur, sa.select(extract_cursor.c.batch_id).where(
                extract_cursor.c.created_at > sa.func.now() - ADOPT_WITHIN))
            others -= {row[0] for row in cur.fetchall()}  # may still be taken over
            # a webhook event's sync is no run of this DAG (a batch it leaves goes with the 7-day clean-up)
            others = {other for other in others if not other.startswith(EVENT_RUN_PREFIX)}
        for other in sorted(others):
            if not dag_run_finished(dag_id, spec.run_id_of(other, athlete_id)):
                continue
            with transaction(conn) as cur:
                for table in tables:
                    execute(cur, sa.delete(table).where(table.c.batch_id == other))
                    removed += cur.rowcount
            log.info("%s: removed what the finished batch %s left behind", spec.id, other)
    except Exception as error:  # housekeeping: the data is loaded, the 7-day cleanup remains
        log.warning("%s: could not remove what finished batches left behind (%s)", spec.id, type(error).__name__)
    return removed


def loaded_already(conn: Any, staged: Staged) -> Loaded | None:
    """What an earlier try of this load committed, when it then died before Airflow heard of it (its
    staged rows and landed records are gone, its ``sync_run`` row is there); None otherwise."""
    if not staged.extract.extracted or landed_count(conn, staged.batch_id):
        return None
    if (recorded := recorded_run(conn, staged.batch_id)) is None:
        # never merge an empty stand-in: it would mark the whole window deleted
        raise NeedsPersonError(
            f"{staged.source}: batch {staged.batch_id} has neither its staged rows nor its landed records, and "
            "sync_run has no row for it. Clear the whole task group to sync the window again.")
    log.info("%s: batch %s was loaded by an earlier try (see sync_run): nothing to do", staged.source,
             staged.batch_id)
    return recorded


def restage(conn: Any, spec: SourceSpec, staged: Staged, db_conn_id: str) -> Staged:
    """Stage the batch again from ``raw_record``. The staging tables are UNLOGGED: a server crash since
    the transform emptied them, while the landed records (logged) survived."""
    from fitness_pipeline.tasks.transform import transform

    log.warning("%s: the staged batch is incomplete (did the database restart since the transform?); staging "
                "it again from raw_record", spec.id)
    staged = transform(staged.extract, db_conn_id=db_conn_id)
    if not staging_intact(conn, spec, staged):
        raise RetriableError(f"{spec.id}: batch {staged.batch_id} is still incomplete in staging after staging it "
                             "again; the next try stages it once more (if it recurs, clear the whole task group)")
    return staged


def recorded_run(conn: Any, batch: str) -> Loaded | None:
    """What ``sync_run`` recorded for ``batch``, if it was loaded."""
    columns = [sync_run.c[name] for name in ("source", "batch_id", "inserted", "updated", "unchanged", "deleted",
                                             "quarantined", "athlete_id")]
    with transaction(conn) as cur:
        execute(cur, sa.select(*columns).where(sync_run.c.batch_id == batch))
        row = cur.fetchone()
    return Loaded(*row) if row else None


def landed_count(conn: Any, batch: str) -> int:
    with transaction(conn) as cur:
        execute(cur, sa.select(sa.func.count()).select_from(raw_record).where(raw_record.c.batch_id == batch))
        return int(cur.fetchone()[0])


def staging_intact(conn: Any, spec: SourceSpec, staged: Staged) -> bool:
    """Whether the staging tables hold as many rows of the batch as the transform staged."""
    from fitness_pipeline.loader import staged_count

    expected = {spec.table: staged.staged, **staged.companions_staged}
    with transaction(conn) as cur:
        return all(staged_count(cur, staging_for(table), staged.batch_id) == expected.get(table.name, 0)
                   for table in (spec.target, *spec.companion_tables()))


def _merge(conn: Any, spec: SourceSpec, staged: Staged, max_deleted_share: float,
           retention_days: int | None = None) -> Loaded:
    from fitness_pipeline import athletes
    from fitness_pipeline.loader import delete_staged, mark_deleted, merge_staged, reconciled_range, release_quarantined

    batch, athlete_id = staged.batch_id, staged.athlete_id
    extracted = staged.extract
    deleted = 0
    with transaction(conn) as cur:
        athletes.hold(cur, athlete_id)
        for companion in spec.companion_tables():
            counts = merge_staged(cur, companion, batch)
            release_quarantined(cur, companion.name, companion, staging_for(companion), batch, athlete_id)
            delete_staged(cur, staging_for(companion), batch)
            log.info("%s: %s: %d inserted, %d updated, %d unchanged", spec.id, companion.name, counts.inserted,
                     counts.updated, counts.unchanged)
        counts = merge_staged(cur, spec.target, batch)
        if extracted.reconcile is not None:
            # raises MassDeletionError (needs a person: a retry would see the same listing)
            deleted = mark_deleted(cur, spec.id, spec.target, batch,
                                   reconciled_range(spec.target, extracted.reconcile, athlete_id), max_deleted_share,
                                   athlete_id=athlete_id)
        release_quarantined(cur, spec.id, spec.target, spec.staging, batch, athlete_id)
        expired = expire(cur, spec, athlete_id, extracted.window.end, retention_days)
        delete_staged(cur, spec.staging, batch)
        execute(cur, sa.delete(raw_record).where(raw_record.c.batch_id == batch))
        loaded = Loaded(spec.id, batch, counts.inserted, counts.updated, counts.unchanged, deleted,
                        staged.quarantined, athlete_id, expired)
        record_run(cur, loaded, extracted.extracted, extracted.window.start, extracted.window.end)
    log.info("%s: %d inserted, %d updated, %d unchanged, %d marked deleted, %d quarantined", spec.id,
             loaded.inserted, loaded.updated, loaded.unchanged, deleted, loaded.quarantined)
    return loaded


def expire(cur: Any, spec: SourceSpec, athlete_id: int, window_end: Any, retention_days: int | None) -> int:
    """Delete for good ``athlete_id``'s rows of ``spec`` older than ``retention_days`` before ``window_end`` (by
    the reconciled column); the extract no longer fetches them either. Returns the rows deleted."""
    if retention_days is None or spec.reconcile is None:
        return 0
    import datetime as dt

    target = spec.target
    horizon = window_end - dt.timedelta(days=retention_days)
    execute(cur, sa.delete(target).where(target.c.athlete_id == athlete_id, target.c[spec.reconcile.column] < horizon))
    if cur.rowcount:
        log.info("%s: %d rows older than the retention of %d days deleted", spec.id, cur.rowcount, retention_days)
    return int(cur.rowcount)


def record_run(cur: Any, loaded: Loaded, extracted: int, window_start: Any, window_end: Any) -> None:
    """Upsert the batch's row in ``sync_run`` (a retried load overwrites it)."""
    record = {"batch_id": loaded.batch_id, "source": loaded.source, "window_start": window_start,
              "window_end": window_end, "extracted": extracted, "quarantined": loaded.quarantined,
              "inserted": loaded.inserted, "updated": loaded.updated, "unchanged": loaded.unchanged,
              "deleted": loaded.deleted, "athlete_id": loaded.athlete_id}
    insert = pg.insert(sync_run).values(**record)
    execute(cur, insert.on_conflict_do_update(
        index_elements=[sync_run.c.batch_id],
        set_={**{k: insert.excluded[k] for k in record if k != "batch_id"}, "finished_at": sa.func.now()}))

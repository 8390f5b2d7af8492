"""The Strava-specific I/O of the steps: extracting activities resumably."""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import closing
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline.apis import STRAVA_MAX_PER_PAGE as MAX_PER_PAGE
from fitness_pipeline.compat import current_dag_id, dag_run_finished
from fitness_pipeline.db import connect, execute, transaction
from fitness_pipeline.schema import DEFAULT_ATHLETE_ID, extract_cursor, raw_record
from fitness_pipeline.sources import SourceSpec
from fitness_pipeline.tasks.extract import batches_of, clear_landed, land_page, land_unlisted_again, landed_keys
from fitness_pipeline.windows import Window

log = logging.getLogger(__name__)
SECOND = dt.timedelta(seconds=1)


def land_activities(spec: SourceSpec, hook: Any, batch: str, window: Window, db_conn_id: str,
                    athlete_id: int = DEFAULT_ATHLETE_ID) -> int:
    """Land every activity of ``athlete_id`` (the athlete ``hook`` is authorized as) that started inside
    ``window``, committing page by page.

    A try that stopped (rate limit, crash, kill) leaves its progress in ``extract_cursor``;
    the next try lists on from the newest landed start instead of from the beginning, so a
    years-long history import never re-fetches what it already has. Duplicates at the seam
    (activities sharing that second) are merged away by the load. Every landed page moves the
    cursor forward (:func:`next_after`), so tries that get one request each still finish.
    A new run of the same window (a re-triggered import after a killed one) takes over the
    progress of the unfinished batch it repeats (:func:`adopt_progress`).
    """
    with closing(connect(db_conn_id)) as conn:
        with transaction(conn) as cur:
            execute(cur, sa.select(extract_cursor.c.after_epoch, extract_cursor.c.landed)
                    .where(extract_cursor.c.batch_id == batch))
            progress = cur.fetchone()
            if progress is None:
                clear_landed(cur, batch)
                progress = adopt_progress(cur, spec, batch, window, athlete_id)
            listed = landed_keys(cur, batch, activity_key) if progress else set()
        after_epoch, landed = progress or (int(window.start.timestamp()), 0)
        if progress:
            log.info("%s: resuming after %d landed activities", spec.id, landed)
        after = dt.datetime.fromtimestamp(max(after_epoch, int(window.start.timestamp())), dt.UTC)
        for page in hook.iter_activity_pages(after, window.end):  # fetched between transactions
            with transaction(conn) as cur:
                landed += land_page(cur, batch, page, landed)
                after_epoch = next_after(after_epoch, page)
                insert = pg.insert(extract_cursor).values(batch_id=batch, after_epoch=after_epoch, landed=landed,
                                                          window_start=window.start, window_end=window.end)
                execute(cur, insert.on_conflict_do_update(
                    index_elements=[extract_cursor.c.batch_id],
                    set_={"after_epoch": insert.excluded.after_epoch, "landed": insert.excluded.landed}))
            listed.update(activity_key(activity) for activity in page)
        landed += land_unlisted_again(
            conn, spec, batch, window, listed, landed,
            # before is exclusive: one second past the latest
            lambda first, last: hook.iter_activity_pages(max(first - SECOND, window.start),
                                                         min(last + SECOND, window.end)),
            # the cursor counts them: a resumed try numbers its records after them
            lambda cur, count: execute(cur, sa.update(extract_cursor).where(extract_cursor.c.batch_id == batch)
                                       .values(landed=extract_cursor.c.landed + count)),
            athlete_id=athlete_id)
        with transaction(conn) as cur:  # complete: a later re-run of this batch starts afresh
            execute(cur, sa.delete(extract_cursor).where(extract_cursor.c.batch_id == batch))
    return landed


def activity_key(activity: Any) -> str | None:
    """An activity's ``id`` as the text of ``strava_activity.id``; None for what transform will quarantine."""
    key = activity.get("id") if isinstance(activity, dict) else None
    return None if key is None or isinstance(key, bool) else str(key)


#: progress older than this is not taken over: what it landed may have been edited or deleted since
#: (a day: the daily full reconciliation re-lists everything anyway)
ADOPT_WITHIN = dt.timedelta(hours=24)


def adopt_progress(cur: Any, spec: SourceSpec, batch: str, window: Window,
                   athlete_id: int = DEFAULT_ATHLETE_ID) -> tuple[int, int] | None:
    """Take over the landed pages of another, unfinished batch of ``spec`` and the same athlete that listed
    from the same start
    (a new run of the same window or import, after a run that was killed or failed): its records and
    cursor become ``batch``'s. Returns its ``(after_epoch, landed)``, or None when there is none.

    Only when still valid for this listing: the same window start, nothing landed at or beyond this
    window's end, at most :data:`ADOPT_WITHIN` old, and its landed records all there; and inside Airflow
    only when Airflow reports that batch's run finished or deleted (never from a run that goes on).
    ``SKIP LOCKED``: two new runs never take over the same batch.
    """
    execute(cur, sa.select(extract_cursor.c.batch_id, extract_cursor.c.after_epoch, extract_cursor.c.landed)
            .where(batches_of(spec, extract_cursor.c.batch_id, athlete_id),
                   extract_cursor.c.batch_id != batch,
                   extract_cursor.c.window_start == window.start,
                   extract_cursor.c.after_epoch + 1 < int(window.end.timestamp()),
                   extract_cursor.c.created_at > sa.func.now() - ADOPT_WITHIN)
            .order_by(extract_cursor.c.landed.desc()).limit(1).with_for_update(skip_locked=True))
    found = cur.fetchone()
    if found is None:
        return None
    other, after_epoch, landed = found
    dag_id = current_dag_id()
    if dag_id is not None and not dag_run_finished(dag_id, spec.run_id_of(other, athlete_id)):
        return None  # its run goes on (a backfill, the same import triggered twice): never take from it
    execute(cur, sa.select(sa.func.count()).select_from(raw_record).where(raw_record.c.batch_id == other))
    if cur.fetchone()[0] != landed:  # not all there (cleared by hand?): start afresh
        return None
    execute(cur, sa.update(raw_record).where(raw_record.c.batch_id == other).values(batch_id=batch))
    execute(cur, sa.update(extract_cursor).where(extract_cursor.c.batch_id == other)
            .values(batch_id=batch, window_end=window.end))
    log.info("%s: taking over %d activities an unfinished earlier run of this window landed", spec.id, landed)
    return int(after_epoch), int(landed)


def next_after(after_epoch: int, page: list[Any]) -> int:
    """The ``after`` a resumed try lists from once ``page`` (listed with ``after_epoch``) has landed.

    Normally one second before the page's newest start: activities sharing that second may continue on
    the next page. When that is no progress (the page held only the seam: activities of the second the
    last try stopped at) and the page was short, every activity of that second was on it, so the cursor
    moves past it. Without this a try that can send just one request (a nearly spent rate-limit
    window) would re-list the seam forever.
    """
    newest = newest_start(page)
    if newest - 1 > after_epoch:
        return newest - 1
    if newest > after_epoch and len(page) < MAX_PER_PAGE:
        return newest
    return after_epoch


def newest_start(page: list[Any]) -> int:
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

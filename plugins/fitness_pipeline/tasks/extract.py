"""The extract step: list a source's records through its hook and land them in ``raw_record``.

Pages are landed as they arrive, each in its own short transaction: no transaction stays open
while the hook waits for the API (or for a rate limit to reset).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from contextlib import closing
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline import sources
from fitness_pipeline.db import FITNESS_DB_CONN_ID, connect, copy_rows, execute, transaction
from fitness_pipeline.handover import Extracted, ReconcileRange
from fitness_pipeline.schema import ATHLETE_ID, DEFAULT_ATHLETE_ID, api_rate_limit, raw_record, record_key
from fitness_pipeline.sources import SourceSpec, resolve
from fitness_pipeline.windows import Window

log = logging.getLogger(__name__)


def extract(source_id: str, run_id: str, window: Window, conn_id: str | None = None,
            db_conn_id: str = FITNESS_DB_CONN_ID, budget_share: float = 1.0,
            athlete_id: int = DEFAULT_ATHLETE_ID) -> Extracted:
    """Land the records ``source_id`` lists for ``window`` (through connection ``conn_id``, default
    the source's) of athlete ``athlete_id`` as batch :meth:`SourceSpec.batch_id`; returns what was landed and
    the range it proves complete.
    ``budget_share``: the share of a shared rate-limit budget the hook may use (hooks that keep one).

    Errors leave as Airflow outcomes (:func:`fitness_pipeline.errors.airflow_outcome`): a rate limit
    with a known reset reschedules the task for it (its worker slot is given back and the next try
    continues where this one stopped), an error only a person can fix fails it without retries.
    """
    from fitness_pipeline.errors import raise_for_airflow

    spec = sources.get(source_id)
    if athlete_id != DEFAULT_ATHLETE_ID and ATHLETE_ID not in spec.target.c:
        from fitness_pipeline.compat import AirflowSkipException

        raise AirflowSkipException(f"{spec.id}: table {spec.table} has no {ATHLETE_ID} column, so it keeps the default "
                                   "athlete's records only; add fitness_pipeline.schema.athlete_column() to it to sync "
                                   "every athlete")
    batch = spec.batch_id(run_id, athlete_id)
    hook = resolve(spec.hook)(conn_id or spec.conn_id, athlete_id=athlete_id)
    if hasattr(hook, "budget_share"):
        hook.budget_share = budget_share
    try:
        if spec.extract is not None:
            landed = resolve(spec.extract)(spec, hook, batch, window, db_conn_id, athlete_id=athlete_id)
        else:
            landed = land_pages(db_conn_id, batch, resolve(spec.fetch)(hook, window))
    except Exception as error:
        refused(error, spec, athlete_id, db_conn_id)
        raise_for_airflow(error)
    finally:
        try:
            record_rate_limit_usage(db_conn_id, hook)  # also after a failure: a limit reached is worth seeing
        finally:
            hook.close()
    log.info("%s: landed %d records for [%s, %s)", spec.id, landed, window.start, window.end)
    return Extracted(spec.id, batch, landed, window, listed_range(spec, window), athlete_id=athlete_id)


def refused(error: Exception, spec: SourceSpec, athlete_id: int, db_conn_id: str) -> None:
    """What an athlete's refused authorization means beyond this task: an athlete other than the default one
    (whose tokens live in the Connection, and whose runs simply fail until it is updated) whose refresh token
    the provider refused for good is marked inactive, so the next runs leave them out instead of failing every
    hour; one who never authorized this source's provider is skipped (they may use one provider only)."""
    from fitness_pipeline.compat import AirflowSkipException
    from fitness_pipeline.errors import AuthorizationRevokedError
    from fitness_pipeline.tokens import NotAuthorizedError

    if athlete_id == DEFAULT_ATHLETE_ID:
        return
    if isinstance(error, NotAuthorizedError):
        raise AirflowSkipException(f"{spec.id}: athlete {athlete_id} has not authorized this source's provider "
                                   f"(connection {spec.conn_id!r})") from None
    if isinstance(error, AuthorizationRevokedError):
        from fitness_pipeline import athletes

        reason = (f"{spec.id}: the provider refused the athlete's authorization for good (revoked?). The athlete "
                  "authorizes again with python -m fitness_pipeline.authorize <strava|fitbit> --athlete NAME, "
                  "which makes them active again; or python -m fitness_pipeline.athletes purge NAME deletes "
                  "their data, as Strava's terms ask when an athlete revokes access.")
        try:
            with closing(connect(db_conn_id)) as conn, transaction(conn) as cur:
                athletes.set_active(cur, athlete_id, False, reason)
        except Exception as problem:  # the task fails all the same, with the provider's message
            log.warning("Could not mark athlete %d inactive (%s)", athlete_id, type(problem).__name__)
            return
        log.error("Athlete %d is now inactive: %s", athlete_id, reason)


def record_rate_limit_usage(db_conn_id: str, hook: Any) -> int:
    """Upsert the rate-limit usage ``hook`` last saw (if it tracks any: ``last_rate_limit_usage()``) into
    ``api_rate_limit``, in its own short transaction after the listing. Never fails the extract: a problem
    is logged as a warning (without the values). Returns the buckets written."""
    usages = [u for u in getattr(hook, "last_rate_limit_usage", list)() if u.seen_at is not None]
    if not usages:
        return 0
    api = str(getattr(hook, "conn_type", None) or type(hook).__name__)
    rows = [{"api": api, "bucket": u.bucket, "window_usage": u.window_usage, "window_limit": u.window_limit,
             "daily_usage": u.daily_usage, "daily_limit": u.daily_limit, "seen_at": u.seen_at,
             "window_seconds": getattr(hook, "window_seconds", None)} for u in usages]
    insert = pg.insert(api_rate_limit).values(rows)
    statement = insert.on_conflict_do_update(
        index_elements=[api_rate_limit.c.api, api_rate_limit.c.bucket],
        set_={**{c: insert.excluded[c] for c in ("window_usage", "window_limit", "daily_usage", "daily_limit",
                                                  "seen_at", "window_seconds")}, "updated_at": sa.func.now()},
        where=insert.excluded.seen_at >= api_rate_limit.c.seen_at)  # an older try's report never wins
    try:
        with closing(connect(db_conn_id)) as conn, transaction(conn) as cur:
            execute(cur, statement)
    except Exception as error:  # the usage is for the calendar's health panel, never worth a failed extract
        log.warning("Could not record the %s rate-limit usage (%s); the extract goes on", api,
                    type(error).__name__)
        return 0
    return len(rows)


def listed_range(spec: SourceSpec, window: Window) -> ReconcileRange | None:
    bounds = spec.listed_range(window)
    return ReconcileRange.of(spec.reconcile.column, bounds) if spec.reconcile and bounds else None


def land_pages(db_conn_id: str, batch: str, pages: Iterable[list[Any]]) -> int:
    """Replace the batch's landed records with ``pages``, committing page by page. Returns the count."""
    with closing(connect(db_conn_id)) as conn:
        with transaction(conn) as cur:
            clear_landed(cur, batch)
        count = 0
        for page in pages:  # the next page is fetched between transactions
            with transaction(conn) as cur:
                count += land_page(cur, batch, page, count)
    return count


def batches_of(spec: SourceSpec, batch_id: sa.ColumnElement[str],
               athlete_id: int = DEFAULT_ATHLETE_ID) -> sa.ColumnElement[bool]:
    """Whether the ``batch_id`` column holds a batch of ``spec`` and ``athlete_id`` (of any run)."""
    suffix = spec.batch_suffix(athlete_id)
    return sa.func.right(batch_id, len(suffix)) == suffix


def clear_landed(cur: Any, batch: str) -> None:
    execute(cur, sa.delete(raw_record).where(raw_record.c.batch_id == batch))


def unlisted_span(cur: Any, spec: SourceSpec, listed: ReconcileRange, listed_keys: set[str],
                  athlete_id: int = DEFAULT_ATHLETE_ID) -> tuple[Any, Any] | None:
    """The earliest and latest ``listed.column`` values of ``athlete_id``'s live rows of ``spec``'s table inside
    ``listed`` whose key is not in ``listed_keys`` (keys as text): the rows the load would mark deleted. None
    when there are none."""
    from fitness_pipeline.loader import reconciled_range

    target = spec.target
    key = record_key(target)
    execute(cur, sa.select(sa.cast(key, sa.Text), target.c[listed.column])
            .where(reconciled_range(target, listed, athlete_id), target.c.deleted_at.is_(None)))
    unlisted = [value for held_key, value in cur.fetchall() if held_key not in listed_keys]
    return (min(unlisted), max(unlisted)) if unlisted else None


def land_unlisted_again(conn: Any, spec: SourceSpec, batch: str, window: Window, listed_keys: set[str],
                        landed: int, relist: Callable[[Any, Any], Iterable[list[Any]]],
                        counted: Callable[[Any, int], None] | None = None,
                        athlete_id: int = DEFAULT_ATHLETE_ID) -> int:
    """Before the load may mark anything deleted: list once more the span of the rows we hold that the listing
    did not bring (``relist(first, last)`` yields pages covering ``[first, last]``) and land what comes after
    the ``landed`` records; returns how many. ``counted(cursor, n)`` runs in each page's transaction.

    A listing is not a snapshot: an item deleted or moved while a listing pages by number or by offset shifts
    later ones back by a place and one is skipped; a server may answer an empty page before the end. Usually
    the missing rows were really deleted, and the span of one deletion costs a request."""
    reconcile = listed_range(spec, window)
    if reconcile is None:
        return 0
    with transaction(conn) as cur:
        span = unlisted_span(cur, spec, reconcile, listed_keys, athlete_id)
    if span is None:
        return 0
    log.info("%s: records we hold were missing from the listing: listing their span again before any is "
             "marked deleted", spec.id)
    added = 0
    for page in relist(*span):
        with transaction(conn) as cur:
            count = land_page(cur, batch, page, landed + added)
            if counted is not None:
                counted(cur, count)
            added += count
    return added


def landed_keys(cur: Any, batch: str, key_of: Callable[[Any], str | None]) -> set[str]:
    """The keys (``key_of(record)``; None for none) of the records ``batch`` landed so far."""
    execute(cur, sa.select(raw_record.c.payload).where(raw_record.c.batch_id == batch))
    keys: set[str] = set()
    for (payload,) in cur.fetchall():
        try:
            key = key_of(json.loads(payload))
        except (ValueError, TypeError, AttributeError):
            continue  # transform quarantines it
        if key is not None:
            keys.add(key)
    return keys


def land_page(cur: Any, batch: str, page: list[Any], start_seq: int) -> int:
    """COPY one page of records into ``raw_record`` (``seq`` from ``start_seq``). Returns the count."""
    # ensure_ascii: any odd string (a lone surrogate) survives landing and is judged by transform
    rows = ((batch, start_seq + i, json.dumps(record)) for i, record in enumerate(page))
    return copy_rows(cur, raw_record.name, ["batch_id", "seq", "payload"], rows)

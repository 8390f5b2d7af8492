"""Detailed activities: what ``GET /activities/{id}`` adds to a listed activity (description, calories, device,
gear, laps), stored by :func:`store_detail` for a webhook event and for the hourly enrichment alike.

The listing (SummaryActivity) carries none of it, and each detail costs one read of the application's shared
budget, so :func:`enrich` reads the activities still missing theirs, oldest first, only while the budget has more
than ``1 - share`` of its window and day left: a history import is enriched over the following hours and days
without ever taking the reads the hourly sync needs. Each detail is stored in its own short transaction (a killed
task loses at most the one it was reading); one that cannot be stored is quarantined with its reason and not read
again until the activity changes upstream and is read for an event.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from contextlib import closing
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline.db import FITNESS_DB_CONN_ID, connect, execute, transaction
from fitness_pipeline.handover import RunParams
from fitness_pipeline.schema import (
    ATHLETE_ID,
    DELETED_AT,
    quarantine,
    strava_activity,
    strava_activity_detail,
    strava_gear,
    strava_lap,
)
from fitness_pipeline.transforms.fields import RecordError, dump_json
from fitness_pipeline.transforms.records import QuarantineEntry

log = logging.getLogger(__name__)

#: ``quarantine.source`` of a detail that could not be stored
QUARANTINE_SOURCE = "strava_activity_detail"
#: activities looked up at a time
BATCH = 100


@dataclasses.dataclass
class Enriched:
    """What :func:`enrich` did for one athlete."""

    read: int = 0
    stored: int = 0
    gone: int = 0
    quarantined: int = 0
    #: the budget share was spent before every missing detail was read (the next run goes on)
    budget_spent: bool = False

    def to_xcom(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def store_detail(cur: Any, detail: Mapping[str, Any], athlete_id: int) -> bool:
    """Store what the DetailedActivity ``detail`` adds to ``athlete_id``'s activity, in the caller's transaction:
    its ``strava_activity_detail`` row, its gear and its laps (laps it no longer has are deleted). Returns False,
    writing nothing, when the activity is not that athlete's row (not listed yet, deleted for good meanwhile).
    Raises :class:`~fitness_pipeline.transforms.fields.RecordError` for a record the transform refuses."""
    from fitness_pipeline.loader import upsert_rows
    from fitness_pipeline.transforms.strava import strava_detail_rows

    rows = strava_detail_rows(detail)
    # FOR KEY SHARE: a retention or purge deleting the activity waits for this transaction (its rows reference it)
    execute(cur, sa.select(strava_activity.c.id)
            .where(strava_activity.c.id == rows.activity_id, strava_activity.c[ATHLETE_ID] == athlete_id)
            .with_for_update(key_share=True))
    if cur.fetchone() is None:
        return False
    if rows.gear is not None:
        upsert_rows(cur, strava_gear, [rows.gear], athlete_id=athlete_id)
    upsert_rows(cur, strava_activity_detail, [rows.detail], athlete_id=athlete_id)
    kept = sa.cast([lap["id"] for lap in rows.laps], pg.ARRAY(sa.BigInteger))
    execute(cur, sa.delete(strava_lap).where(strava_lap.c.activity_id == rows.activity_id,
                                             sa.not_(strava_lap.c.id == sa.any_(kept))))
    upsert_rows(cur, strava_lap, rows.laps, athlete_id=athlete_id)
    return True


#: what :func:`store_or_quarantine` did with a detail
STORED, GONE, QUARANTINED = "stored", "gone", "quarantined"


def store_or_quarantine(cur: Any, activity_id: int, detail: Mapping[str, Any], athlete_id: int) -> str:
    """:func:`store_detail` under a SAVEPOINT in the caller's transaction. A detail the transform refuses is
    quarantined instead (``strava_activity_detail``, keyed by ``activity_id``: not read again), and what the caller's
    transaction wrote before stays (an event's update of the activity). Returns :data:`STORED`, :data:`GONE` (not
    that athlete's activity row) or :data:`QUARANTINED`."""
    from fitness_pipeline.loader import quarantine_records

    cur.execute("SAVEPOINT fitness_detail")
    try:
        stored = store_detail(cur, detail, athlete_id)
    except RecordError as error:
        cur.execute("ROLLBACK TO SAVEPOINT fitness_detail")
        quarantine_records(cur, QUARANTINE_SOURCE, [QuarantineEntry(str(activity_id), str(error),
                                                                    dump_json(detail))], athlete_id)
        log.warning("The detail of an activity of athlete %d was quarantined: %s", athlete_id, error)
        outcome = QUARANTINED
    else:
        outcome = STORED if stored else GONE
    cur.execute("RELEASE SAVEPOINT fitness_detail")  # not after a database error: that fails the transaction
    return outcome


def missing(cur: Any, athlete_id: int, limit: int = BATCH, since: dt.datetime | None = None) -> list[int]:
    """Ids of ``athlete_id``'s listed activities (started at or after ``since``) without their detail, oldest
    first; deleted and quarantined ones are left out."""
    a, d, q = strava_activity, strava_activity_detail, quarantine
    query = (sa.select(a.c.id)
             .where(a.c[ATHLETE_ID] == athlete_id, a.c[DELETED_AT].is_(None),
                    ~sa.exists().where(d.c.activity_id == a.c.id),
                    ~sa.exists().where(q.c[ATHLETE_ID] == athlete_id, q.c.source == QUARANTINE_SOURCE,
                                       q.c.record_key == sa.cast(a.c.id, sa.Text)))
             .order_by(a.c.start_date, a.c.id).limit(limit))
    if since is not None:
        query = query.where(a.c.start_date >= since)
    execute(cur, query)
    return [activity_id for (activity_id,) in cur.fetchall()]


def enrich(athlete_id: int, share: float, *, retention_days: int | None = None, conn_id: str | None = None,
           db_conn_id: str = FITNESS_DB_CONN_ID, hook: Any = None) -> Enriched:
    """Read and store the details ``athlete_id``'s activities lack, oldest first, while the application's Strava
    budget has room within ``share`` of each window and day (0: none are read). Never waits for the budget: once
    the share is spent the rest waits for the next run. Returns what was done."""
    from fitness_pipeline import athletes
    from fitness_pipeline.errors import AuthorizationError, FatalApiError, RateLimitError, RetriableApiError
    from fitness_pipeline.hooks.strava import StravaHook
    from fitness_pipeline.loader import quarantine_records

    done = Enriched()
    if share <= 0:
        return done
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=retention_days) if retention_days else None
    own_hook = hook is None
    hook = hook or StravaHook(conn_id or StravaHook.default_conn_name, athlete_id=athlete_id)
    hook.budget_share = share
    hook.settings = dataclasses.replace(hook.settings, max_rate_limit_wait=0)  # never wait: the next run goes on
    tried: set[int] = set()
    try:
        with closing(connect(db_conn_id)) as conn:
            while True:
                with transaction(conn) as cur:
                    batch = [i for i in missing(cur, athlete_id, BATCH + len(tried), since) if i not in tried]
                if not batch:
                    break
                for activity_id in batch:
                    tried.add(activity_id)
                    try:
                        detail = hook.get_activity(activity_id)
                    except RateLimitError:
                        done.budget_spent = True
                        break
                    except RetriableApiError as error:  # Strava failing after the hook's retries: next run
                        log.warning("Activity details of athlete %d: stopped, Strava failed (%s)", athlete_id, error)
                        done.budget_spent = True
                        break
                    except FatalApiError as error:
                        if isinstance(error, AuthorizationError):  # the athlete's, not this activity's
                            raise
                        with transaction(conn) as cur:  # this activity's (a 4xx): not read again, the rest goes on
                            quarantine_records(cur, QUARANTINE_SOURCE, [QuarantineEntry(
                                str(activity_id), f"Strava refused its detail: {error}", "{}")], athlete_id)
                        done.quarantined += 1
                        continue
                    done.read += 1
                    with transaction(conn) as cur:
                        athletes.hold(cur, athlete_id)
                        if detail is None:  # deleted upstream since it was listed: the next listing says so
                            done.gone += 1
                            continue
                        outcome = store_or_quarantine(cur, activity_id, detail, athlete_id)
                        done.stored += outcome == STORED
                        done.gone += outcome == GONE
                        done.quarantined += outcome == QUARANTINED
                if done.budget_spent:
                    break
    finally:
        if own_hook:
            hook.close()
    log.info("Activity details of athlete %d: %s", athlete_id, done)
    return done



def enrich_for_run(athlete_id: int, run: RunParams) -> dict[str, Any]:
    """The DAG's enrich step of one athlete: :func:`enrich` with the run's ``detail_budget_share`` (a history import
    keeps to the smaller of it and ``history_budget_share``) and retention."""
    share = min(run.detail_budget_share, run.history_budget_share) if run.history_start else run.detail_budget_share
    return enrich(athlete_id, share, retention_days=run.strava_retention_days).to_xcom()

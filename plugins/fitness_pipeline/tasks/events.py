"""Applying the events the receiver stored (issue 12, part 3's processing; the DAG that runs it is to come).

Strava events: an activity created or updated is read again from the API (``GET /activities/{id}``: an
event carries no data, and is not signed) and upserted for its athlete; one deleted is marked deleted; an
athlete who revoked the app is marked inactive. At least once, idempotently: applying an event twice
changes nothing the second time. Events are claimed a batch at a time in a short transaction
(``FOR UPDATE SKIP LOCKED``: two workers never take the same one), applied one by one with no transaction
open during a request, each marked processed in the transaction that applies it. An event that cannot be
applied (an unknown athlete, a record the transform refuses) is marked processed with its reason and put
in quarantine; it does not stop the others. An API or database error leaves the event pending for the
next try (its claim expires after :data:`CLAIM_EXPIRES`). Google notifications stay pending: their
payload is not documented yet, and the hourly poll syncs those data.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fitness_pipeline.db import FITNESS_DB_CONN_ID, connect, execute, transaction
from fitness_pipeline.errors import NeedsPersonError
from fitness_pipeline.schema import DELETED_AT, LAST_TIME, athlete, strava_activity, webhook_event
from fitness_pipeline.transforms.fields import RecordError
from fitness_pipeline.transforms.records import QuarantineEntry

log = logging.getLogger(__name__)

#: a claim older than this is taken again (its worker died)
CLAIM_EXPIRES = dt.timedelta(minutes=10)
#: events claimed at a time
BATCH = 50
#: ``quarantine.source`` of an event that could not be applied
QUARANTINE_SOURCE = "webhook_event"


class EventError(NeedsPersonError):
    """An event that can never be applied as it is (the message says why; it goes to quarantine)."""


@dataclass
class Applied:
    """What :func:`apply_pending` did."""

    upserted: int = 0
    deleted: int = 0
    deauthorized: int = 0
    quarantined: int = 0


def claim(conn: Any, limit: int = BATCH) -> list[tuple[int, str]]:
    """Take up to ``limit`` pending Strava events, oldest first: ``(id, payload)``."""
    pending = (sa.select(webhook_event.c.id)
               .where(webhook_event.c.provider == "strava", webhook_event.c.processed_at.is_(None),
                      sa.or_(webhook_event.c.claimed_at.is_(None),
                             webhook_event.c.claimed_at < sa.func.now() - CLAIM_EXPIRES))
               .order_by(webhook_event.c.id).limit(limit).with_for_update(skip_locked=True))
    with transaction(conn) as cur:
        execute(cur, sa.update(webhook_event).where(webhook_event.c.id.in_(pending.scalar_subquery()))
                .values(claimed_at=sa.func.now()).returning(webhook_event.c.id, webhook_event.c.payload))
        return sorted(cur.fetchall())


def athlete_of(cur: Any, owner_id: int) -> int | None:
    """Our athlete whose Strava athlete id is ``owner_id``: from the athlete table, else the one whose activities
    name that owner (the default athlete, whose Strava id the Connection does not say)."""
    execute(cur, sa.select(athlete.c.id).where(athlete.c.strava_athlete_id == owner_id))
    row = cur.fetchone()
    if row is None:
        execute(cur, sa.select(strava_activity.c.athlete_id).where(strava_activity.c.owner == owner_id).limit(1))
        row = cur.fetchone()
    return int(row[0]) if row else None


def apply_pending(db_conn_id: str = FITNESS_DB_CONN_ID, hook_for: Any = None) -> Applied:
    """Apply every pending Strava event; returns what was done. ``hook_for(athlete_id)``: the Strava hook of an
    athlete (default: ``StravaHook(athlete_id=...)``)."""
    from fitness_pipeline.hooks.strava import StravaHook

    hook_for = hook_for or (lambda athlete_id: StravaHook(athlete_id=athlete_id))
    applied = Applied()
    hooks: dict[int, Any] = {}
    try:
        with closing(connect(db_conn_id)) as conn:
            while batch := claim(conn):
                for event_id, payload in batch:
                    apply_one(conn, event_id, json.loads(payload), hooks, hook_for, applied)
    finally:
        for hook in hooks.values():
            hook.close()
    log.info("Events applied: %s", applied)
    return applied


def apply_one(conn: Any, event_id: int, event: dict[str, Any], hooks: dict[int, Any], hook_for: Any,
              applied: Applied) -> None:
    """Apply one Strava event and mark it processed (or quarantine it with its reason)."""
    from fitness_pipeline import athletes
    from fitness_pipeline.loader import quarantine_records, upsert_rows
    from fitness_pipeline.transforms.strava import strava_activity_row

    try:
        with transaction(conn) as cur:
            athlete_id = athlete_of(cur, int(event["owner_id"]))
        if athlete_id is None:
            raise EventError("the event's athlete is not one of ours (authorized the app elsewhere?)")
        if event["object_type"] == "athlete":
            revoked = str((event.get("updates") or {}).get("authorized", "")).lower() == "false"
            with transaction(conn) as cur:
                if revoked:
                    athletes.set_active(cur, athlete_id, False, "revoked the app on Strava (webhook event): the "
                                        "athlete authorizes it again with python -m fitness_pipeline.authorize "
                                        "strava --athlete NAME; python -m fitness_pipeline.athletes purge NAME "
                                        "deletes their data, as Strava's terms ask")
                    applied.deauthorized += 1
                processed(cur, event_id)
            return
        activity_id = int(event["object_id"])
        detail = None
        if event["aspect_type"] != "delete":
            if athlete_id not in hooks:
                hooks[athlete_id] = hook_for(athlete_id)
            detail = hooks[athlete_id].get_activity(activity_id)  # no transaction open during the request
        with transaction(conn) as cur:
            athletes.hold(cur, athlete_id)
            if detail is None:  # deleted (or gone by the time we asked)
                execute(cur, sa.update(strava_activity)
                        .where(strava_activity.c.id == activity_id, strava_activity.c.athlete_id == athlete_id,
                               strava_activity.c[DELETED_AT].is_(None))
                        .values({DELETED_AT: sa.func.now(), LAST_TIME: sa.func.now()}))
                applied.deleted += cur.rowcount
            else:
                upsert_rows(cur, strava_activity, [strava_activity_row(detail)], athlete_id=athlete_id)
                applied.upserted += 1
            processed(cur, event_id)
    except (EventError, RecordError, KeyError, TypeError, ValueError) as error:
        known = isinstance(error, EventError | RecordError)
        reason = str(error) if known else f"malformed event ({type(error).__name__})"
        with transaction(conn) as cur:
            quarantine_records(cur, QUARANTINE_SOURCE, [QuarantineEntry(str(event_id), reason, json.dumps(event))])
            processed(cur, event_id, reason)
        applied.quarantined += 1
        log.warning("Event %d quarantined: %s", event_id, reason)


def processed(cur: Any, event_id: int, error: str | None = None) -> None:
    execute(cur, sa.update(webhook_event).where(webhook_event.c.id == event_id)
            .values(processed_at=sa.func.now(), error=error))

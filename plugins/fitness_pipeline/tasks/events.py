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
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline.db import FITNESS_DB_CONN_ID, connect, execute, transaction
from fitness_pipeline.errors import NeedsPersonError
from fitness_pipeline.schema import DEFAULT_ATHLETE_ID, DELETED_AT, LAST_TIME, strava_activity, webhook_event
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


def apply_pending(db_conn_id: str = FITNESS_DB_CONN_ID, hook_for: Any = None) -> Applied:
    """Apply every pending Strava event; returns what was done. ``hook_for(athlete_id)``: the Strava hook of an
    athlete (default: ``StravaHook(athlete_id=...)``).

    An error that is not the event's fault (the API, the database, the budget) releases the claims of the event
    and of the rest of its batch, and fails the try: the next try (or run) takes them again."""
    from fitness_pipeline.hooks.strava import StravaHook

    hook_for = hook_for or (lambda athlete_id: StravaHook(athlete_id=athlete_id))
    applied = Applied()
    hooks: dict[int, Any] = {}
    try:
        with closing(connect(db_conn_id)) as conn:
            while batch := claim(conn):
                for position, (event_id, payload) in enumerate(batch):
                    try:
                        apply_one(conn, event_id, payload, hooks, hook_for, applied)
                    except Exception:
                        release(conn, [pending for pending, _ in batch[position:]])
                        raise
    finally:
        for hook in hooks.values():
            hook.close()
    log.info("Events applied: %s", applied)
    return applied


def release(conn: Any, event_ids: list[int]) -> None:
    """Give the claims of ``event_ids`` back (the events are taken again at once by the next try)."""
    try:
        with transaction(conn) as cur:
            execute(cur, sa.update(webhook_event).where(webhook_event.c.id == sa.any_(
                                                            sa.cast(event_ids, pg.ARRAY(sa.BigInteger))),
                                                        webhook_event.c.processed_at.is_(None))
                    .values(claimed_at=None))
    except Exception as error:  # the claims expire after CLAIM_EXPIRES all the same
        log.warning("Could not release %d claimed events (%s)", len(event_ids), type(error).__name__)


def event_of(payload: str) -> dict[str, Any]:
    """The stored Strava event, checked again (the receiver checked it; the table may hold older rows)."""
    try:
        event = json.loads(payload)
        checked = {"object_type": str(event["object_type"]), "aspect_type": str(event["aspect_type"]),
                   "object_id": int(event["object_id"]), "owner_id": int(event["owner_id"]),
                   "updates": dict(event.get("updates") or {})}
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise EventError(f"malformed event ({type(error).__name__})") from None
    if checked["object_type"] not in ("activity", "athlete"):
        raise EventError("malformed event (object_type)")
    return checked


#: DetailedActivity fields kept out of ``strava_activity.raw``: the row keeps what the poll keeps (the
#: SummaryActivity), so an event and a poll leave the same row; what the detail adds goes to its own tables
#: (:func:`fitness_pipeline.tasks.details.store_detail`)
DETAIL_ONLY = frozenset({"description", "calories", "segment_efforts", "splits_metric", "splits_standard", "laps",
                         "best_efforts", "gear", "photos", "embed_token", "similar_activities", "available_zones",
                         "hide_from_home", "stats_visibility", "private_note", "perceived_exertion",
                         "prefer_perceived_exertion"})


def apply_one(conn: Any, event_id: int, payload: str, hooks: dict[int, Any], hook_for: Any,
              applied: Applied) -> None:
    """Apply one Strava event and mark it processed (or quarantine it with its reason). Nothing in an event is
    trusted (it is not signed): an activity is read again, a revocation is confirmed with a token refresh."""
    from fitness_pipeline import athletes
    from fitness_pipeline.errors import AuthorizationRevokedError
    from fitness_pipeline.loader import quarantine_records, upsert_rows
    from fitness_pipeline.tasks.details import store_detail
    from fitness_pipeline.tokens import NotAuthorizedError
    from fitness_pipeline.transforms.strava import strava_activity_row

    athlete_id: int | None = None
    try:
        event = event_of(payload)
        with transaction(conn) as cur:
            athlete_id = athletes.of_strava_athlete(cur, event["owner_id"])
        if athlete_id is None:
            raise EventError("the event's athlete is not one of ours (authorized the app elsewhere?)")
        if athlete_id not in hooks:
            hooks[athlete_id] = hook_for(athlete_id)
        hook = hooks[athlete_id]
        if event["object_type"] == "athlete":
            revoked = str(event["updates"].get("authorized", "")).lower() == "false"
            if revoked:
                try:  # a late or forged event must not deactivate an athlete whose authorization works
                    hook.access_token(force_refresh=True)
                    revoked = False
                except (AuthorizationRevokedError, NotAuthorizedError):
                    pass
            with transaction(conn) as cur:
                if revoked and athlete_id != DEFAULT_ATHLETE_ID:
                    athletes.set_active(cur, athlete_id, False, "revoked the app on Strava (webhook event): the "
                                        "athlete authorizes it again with python -m fitness_pipeline.authorize "
                                        "strava --athlete NAME; python -m fitness_pipeline.athletes purge NAME "
                                        "deletes their data, as Strava's terms ask")
                    applied.deauthorized += 1
                processed(cur, event_id)
            return
        detail = hook.get_activity(event["object_id"])  # every aspect: a deletion too is Strava's to say
        if detail is not None and (detail.get("athlete") or {}).get("id", event["owner_id"]) != event["owner_id"]:
            raise EventError("the activity Strava returned belongs to another athlete than the event's")
        with transaction(conn) as cur:
            athletes.hold(cur, athlete_id)
            if detail is None:  # Strava has no such record: deleted
                execute(cur, sa.update(strava_activity)
                        .where(strava_activity.c.id == event["object_id"], strava_activity.c.athlete_id == athlete_id,
                               strava_activity.c[DELETED_AT].is_(None))
                        .values({DELETED_AT: sa.func.now(), LAST_TIME: sa.func.now()}))
                applied.deleted += cur.rowcount
            else:
                summary = {key: value for key, value in detail.items() if key not in DETAIL_ONLY}
                upsert_rows(cur, strava_activity, [strava_activity_row(summary)], athlete_id=athlete_id)
                store_detail(cur, detail, athlete_id)  # its description, calories, gear and laps
                applied.upserted += 1
            processed(cur, event_id)
    except (EventError, RecordError) as error:
        with transaction(conn) as cur:
            quarantine_records(cur, QUARANTINE_SOURCE, [QuarantineEntry(str(event_id), str(error), payload)],
                               athlete_id if athlete_id is not None else DEFAULT_ATHLETE_ID)
            processed(cur, event_id, str(error))
        applied.quarantined += 1
        log.warning("Event %d quarantined: %s", event_id, error)


def processed(cur: Any, event_id: int, error: str | None = None) -> None:
    execute(cur, sa.update(webhook_event).where(webhook_event.c.id == event_id)
            .values(processed_at=sa.func.now(), error=error))

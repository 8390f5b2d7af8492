"""Applying the events the receiver stored (issue 12): the processing of DAG ``fitness_events``.

Strava events: an activity created or updated is read again from the API (``GET /activities/{id}``: an
event carries no data, and is not signed) and upserted for its athlete with its detail; one deleted is marked
deleted; an athlete who revoked the app is marked inactive. Google Health notifications (signed; they say which
user's data of which type changed in which interval) are coalesced per athlete and source, and each such group
syncs that source for that interval only, through the same extract, transform and load as ``fitness_sync``
(so a deletion is reconciled as there). At least once, idempotently: applying an event twice changes nothing
the second time. Events are claimed a batch at a time in a short transaction (``FOR UPDATE SKIP LOCKED``: two
workers never take the same one), applied with no transaction open during a request, and marked processed in
the transaction that applies them. An event that cannot be applied (an unknown athlete, a record the transform
refuses) is marked processed with its reason and put in quarantine; it does not stop the others. An API or
database error leaves the event pending for the next try (its claim is given back, and expires after
:data:`CLAIM_EXPIRES` if even that fails).
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
from fitness_pipeline.handover import EVENT_RUN_PREFIX
from fitness_pipeline.schema import DEFAULT_ATHLETE_ID, DELETED_AT, LAST_TIME, strava_activity, webhook_event
from fitness_pipeline.transforms.fields import RecordError
from fitness_pipeline.transforms.records import QuarantineEntry
from fitness_pipeline.windows import MAX_UTC_OFFSET, Window

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
    #: activity events not read because a later one of the same batch reads the same activity
    superseded: int = 0
    #: Google notifications applied, and the syncs (one per athlete and source) they made
    notified: int = 0
    synced: int = 0


def claim(conn: Any, limit: int = BATCH, provider: str = "strava") -> list[tuple[int, str]]:
    """Take up to ``limit`` pending events of ``provider``, oldest first: ``(id, payload)``."""
    pending = (sa.select(webhook_event.c.id)
               .where(webhook_event.c.provider == provider, webhook_event.c.processed_at.is_(None),
                      sa.or_(webhook_event.c.claimed_at.is_(None),
                             webhook_event.c.claimed_at < sa.func.now() - CLAIM_EXPIRES))
               .order_by(webhook_event.c.id).limit(limit).with_for_update(skip_locked=True))
    with transaction(conn) as cur:
        execute(cur, sa.update(webhook_event).where(webhook_event.c.id.in_(pending.scalar_subquery()))
                .values(claimed_at=sa.func.now()).returning(webhook_event.c.id, webhook_event.c.payload))
        return sorted(cur.fetchall())


def apply_pending(db_conn_id: str = FITNESS_DB_CONN_ID, hook_for: Any = None) -> Applied:
    """Apply every pending Strava event, then every pending Google notification; returns what was done.
    ``hook_for(athlete_id)``: the Strava hook of an athlete (default: ``StravaHook(athlete_id=...)``).

    An error that is not the event's fault (the API, the database, the budget) releases the claims of the event
    and of the rest of its batch, and fails the try: the next try (or run) takes them again."""
    from fitness_pipeline.hooks.strava import StravaHook

    hook_for = hook_for or (lambda athlete_id: StravaHook(athlete_id=athlete_id))
    applied = Applied()
    hooks: dict[int, Any] = {}
    try:
        with closing(connect(db_conn_id)) as conn:
            while batch := claim(conn):
                latest = latest_per_activity(batch)
                for position, (event_id, payload) in enumerate(batch):
                    try:
                        if event_id not in latest:  # a later event of the batch reads the same activity
                            with transaction(conn) as cur:
                                processed(cur, event_id)
                            applied.superseded += 1
                            continue
                        apply_one(conn, event_id, payload, hooks, hook_for, applied)
                    except Exception as error:
                        release(conn, [pending for pending, _ in batch[position:]], error)
                        raise
            while batch := claim(conn, provider="google"):
                apply_google(conn, batch, applied, db_conn_id)
    finally:
        for hook in hooks.values():
            hook.close()
    log.info("Events applied: %s", applied)
    return applied


def release(conn: Any, event_ids: list[int], error: BaseException | None = None) -> None:
    """Give the claims of ``event_ids`` back: taken again at once by the next try; or, when ``error`` says when to
    come back (the API's budget is spent until a reset), kept until then, so that the trigger does not start a
    run a minute for events that cannot be applied before the reset (the rescheduled try takes them then)."""
    from fitness_pipeline.errors import ComeBackLater

    claimed_at: Any = None
    if isinstance(error, ComeBackLater) and error.retry_at is not None:
        claimed_at = error.retry_at - CLAIM_EXPIRES  # the claims expire at the reset
    try:
        with transaction(conn) as cur:
            execute(cur, sa.update(webhook_event).where(webhook_event.c.id == sa.any_(
                                                            sa.cast(event_ids, pg.ARRAY(sa.BigInteger))),
                                                        webhook_event.c.processed_at.is_(None))
                    .values(claimed_at=claimed_at))
    except Exception as problem:  # the claims expire after CLAIM_EXPIRES all the same
        log.warning("Could not release %d claimed events (%s)", len(event_ids), type(problem).__name__)


def latest_per_activity(batch: list[tuple[int, str]]) -> set[int]:
    """The events of ``batch`` to apply: all but an activity event followed, in the batch, by another event of the
    same activity and owner (reading the activity once gives its state after both: an upload renamed a minute
    later costs one read, not two). Events that do not parse are kept (applying them quarantines them)."""
    last: dict[tuple[int, int], int] = {}
    kept: set[int] = set()
    for event_id, payload in batch:
        try:
            event = event_of(payload)
        except EventError:
            kept.add(event_id)
            continue
        if event["object_type"] == "activity":  # by owner too: a forged event must not stand in for a real one
            last[(event["owner_id"], event["object_id"])] = event_id
        else:
            kept.add(event_id)
    return kept | set(last.values())


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
    from fitness_pipeline.loader import upsert_rows
    from fitness_pipeline.tasks.details import store_or_quarantine
    from fitness_pipeline.tokens import NotAuthorizedError
    from fitness_pipeline.transforms.strava import strava_activity_row

    athlete_id: int | None = None
    try:
        event = event_of(payload)
        with transaction(conn) as cur:
            athlete_id = athletes.of_strava_athlete(cur, event["owner_id"])
        if athlete_id is None:
            raise EventError("the event's athlete is not one of ours (authorized the app elsewhere?)")
        with transaction(conn) as cur:
            active = athletes.find(cur, str(athlete_id)).active
        if event["object_type"] == "activity" and not active:
            raise EventError("the event's athlete is inactive (python -m fitness_pipeline.athletes list says why); "
                             "the poll syncs their activities once they are enabled again")
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
                    if athletes.purge_on_revoke():  # Strava's API agreement: delete their Strava data
                        purged = athletes.purge_strava(cur, athletes.find(cur, str(athlete_id)))
                        log.warning("Athlete %d revoked the app on Strava: their Strava data was deleted (%s)",
                                    athlete_id, purged)
                        reason = ("revoked the app on Strava (webhook event); their Strava data was deleted "
                                  f"(${athletes.PURGE_ON_REVOKE_ENV}). They authorize it again with python -m "
                                  "fitness_pipeline.authorize strava --athlete NAME")
                    else:
                        reason = ("revoked the app on Strava (webhook event): the athlete authorizes it again with "
                                  "python -m fitness_pipeline.authorize strava --athlete NAME; python -m "
                                  "fitness_pipeline.athletes purge NAME deletes their data, as Strava's terms ask "
                                  f"(or set {athletes.PURGE_ON_REVOKE_ENV}=true to delete it at once)")
                    athletes.set_active(cur, athlete_id, False, reason)
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
                store_or_quarantine(cur, event["object_id"], detail, athlete_id)  # description, gear, laps
                applied.upserted += 1
            processed(cur, event_id)
    except (NeedsPersonError, RecordError) as error:
        # what no retry changes (a record refused, an athlete not ours or whose authorization is refused for good,
        # a 4xx): the event is kept with its reason and the next ones go on; anything else is retried
        quarantine_event(conn, event_id, payload, error, athlete_id, applied)


def processed(cur: Any, event_id: int, error: str | None = None) -> None:
    execute(cur, sa.update(webhook_event).where(webhook_event.c.id == event_id)
            .values(processed_at=sa.func.now(), error=error))


# --- Google Health notifications --------------------------------------------------------------------------

#: the source that keeps each Google Health data type a notification may name (height: the weights' BMI)
GOOGLE_SOURCES = {"weight": "fitbit_weight", "body-fat": "fitbit_weight", "height": "fitbit_weight",
                  "nutrition-log": "fitbit_calories"}


@dataclass(frozen=True)
class Notification:
    """What one stored Google notification says: whose data of which type changed in which UTC window, and how."""

    user: str
    data_type: str
    window: Window
    operation: str = "UPSERT"


def notification_of(payload: str) -> Notification:
    """The stored Google notification (``{"data": {"healthUserId", "dataType", "operation", "intervals"}}``),
    checked; its window covers every interval (physical times, else the civil dates in any time zone)."""
    try:
        data = json.loads(payload)
        data = data.get("data", data)
        user, data_type = str(data["healthUserId"]), str(data["dataType"])
        operation = str(data.get("operation") or "UPSERT")
        spans = [interval_span(interval) for interval in data["intervals"]]
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise EventError(f"malformed notification ({type(error).__name__})") from None
    if not spans or not user:
        raise EventError("malformed notification (no healthUserId or no interval)")
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    # an instant's end is its own: the window is half-open
    return Notification(user, data_type, Window(start, end + dt.timedelta(seconds=1)), operation)


def interval_span(interval: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants an interval of a notification spans."""
    physical = interval.get("physicalTimeInterval")
    if physical:
        return (dt.datetime.fromisoformat(physical["startTime"].replace("Z", "+00:00")).astimezone(dt.UTC),
                dt.datetime.fromisoformat(physical["endTime"].replace("Z", "+00:00")).astimezone(dt.UTC))
    civil = interval["civilDateTimeInterval"]
    first, last = (dt.datetime(d["year"], d["month"], d["day"], tzinfo=dt.UTC)
                   for d in (civil["startDateTime"]["date"], civil["endDateTime"]["date"]))
    return first - MAX_UTC_OFFSET, last + dt.timedelta(days=1) + MAX_UTC_OFFSET


#: notifications whose windows are this close are synced together (one listing instead of two)
MERGE_GAP = dt.timedelta(hours=1)


@dataclass
class NotifiedSync:
    """One sync that notifications ask for: a source of an athlete over one window."""

    athlete_id: int
    source: str
    window: Window
    event_ids: list[int]
    notifications: list[Notification]


def notified_syncs(notified: list[tuple[int, int, str, Notification]]) -> list[NotifiedSync]:
    """The syncs ``(event id, athlete, source, notification)`` ask for: per athlete and source, the windows that
    overlap (or lie within :data:`MERGE_GAP`) merged, so that one old edit and one of today are two small syncs,
    not one long one."""
    syncs: list[NotifiedSync] = []
    ordered = sorted(notified, key=lambda n: (n[1], n[2], n[3].window.start))
    for event_id, athlete_id, source, notification in ordered:
        last = syncs[-1] if syncs else None
        if (last is not None and (last.athlete_id, last.source) == (athlete_id, source)
                and notification.window.start <= last.window.end + MERGE_GAP):
            last.window = Window(last.window.start, max(last.window.end, notification.window.end))
            last.event_ids.append(event_id)
            last.notifications.append(notification)
        else:
            syncs.append(NotifiedSync(athlete_id, source, notification.window, [event_id], [notification]))
    return syncs


def apply_google(conn: Any, batch: list[tuple[int, str]], applied: Applied, db_conn_id: str) -> None:
    """Apply a batch of claimed Google notifications: one sync per athlete, source and window they name (see
    :func:`notified_syncs`); each sync's events are marked processed once its load committed. A sync that needs
    a person (the athlete's authorization refused, a refused mass deletion) quarantines its events with the reason;
    an error a retry may mend gives back the claims of every event not applied yet and fails the try."""
    from fitness_pipeline import athletes
    from fitness_pipeline.compat import AirflowFailException, AirflowSkipException

    notified: list[tuple[int, int, str, Notification]] = []
    identities: dict[str, int | None] = {}
    try:
        for event_id, payload in batch:
            try:
                notification = notification_of(payload)
                if notification.user not in identities:
                    identities[notification.user] = athletes.of_google_user(conn, notification.user)
                athlete_id = identities[notification.user]
                if athlete_id is None:
                    raise EventError("the notification's user is not one of ours (authorized the app elsewhere?)")
            except EventError as error:
                quarantine_event(conn, event_id, payload, error, None, applied)
                continue
            source = GOOGLE_SOURCES.get(notification.data_type)
            if source is None:  # a data type this pipeline does not keep (the subscriber may list more)
                with transaction(conn) as cur:
                    processed(cur, event_id)
                continue
            notified.append((event_id, athlete_id, source, notification))
        for sync in notified_syncs(notified):
            try:
                sync_notified(sync, db_conn_id)
            except (AirflowFailException, AirflowSkipException, NeedsPersonError) as error:
                payloads = dict(batch)
                for event_id in sync.event_ids:
                    quarantine_event(conn, event_id, payloads[event_id], error, sync.athlete_id, applied)
                continue
            with transaction(conn) as cur:
                for event_id in sync.event_ids:
                    processed(cur, event_id)
            applied.notified += len(sync.event_ids)
            applied.synced += 1
    except Exception as error:
        release(conn, [event_id for event_id, _ in batch], error)  # those applied or quarantined stay processed
        raise


def sync_notified(sync: NotifiedSync, db_conn_id: str) -> None:
    """Sync ``sync.source`` of its athlete for its window (to midnight when a height changed: the weights' extract
    lists the heights on runs ending at midnight) through the usual extract, transform and load, as batch
    ``webhook-event-<first event>/<source>...``. A point gone from a window a DELETE names is deleted whatever
    share of the window that is; otherwise the load's ``max_deleted_share`` guard holds."""
    from fitness_pipeline.handover import RunParams
    from fitness_pipeline.tasks.extract import extract
    from fitness_pipeline.tasks.load import load
    from fitness_pipeline.tasks.transform import transform

    window = sync.window
    if any(n.data_type == "height" for n in sync.notifications):
        midnight = window.end.replace(hour=0, minute=0, second=0, microsecond=0)
        window = Window(window.start, midnight if midnight == window.end else midnight + dt.timedelta(days=1))
    extracted = extract(sync.source, f"{EVENT_RUN_PREFIX}{min(sync.event_ids)}", window, db_conn_id=db_conn_id,
                        athlete_id=sync.athlete_id)
    deleting = any(n.operation == "DELETE" for n in sync.notifications)
    load(transform(extracted, db_conn_id=db_conn_id), db_conn_id=db_conn_id,
         max_deleted_share=1.0 if deleting else RunParams.max_deleted_share)


def quarantine_event(conn: Any, event_id: int, payload: str, error: Exception, athlete_id: int | None,
                     applied: Applied) -> None:
    """Mark an event that can never be applied processed, with its reason, and keep it in quarantine."""
    from fitness_pipeline.loader import quarantine_records

    with transaction(conn) as cur:
        quarantine_records(cur, QUARANTINE_SOURCE, [QuarantineEntry(str(event_id), str(error), payload)],
                           athlete_id if athlete_id is not None else DEFAULT_ATHLETE_ID)
        processed(cur, event_id, str(error))
    applied.quarantined += 1
    log.warning("Event %d quarantined: %s", event_id, error)

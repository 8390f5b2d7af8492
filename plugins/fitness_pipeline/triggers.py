"""The event trigger that watches ``webhook_event`` for the event-driven DAG (Airflow 3: an ``AssetWatcher``).

It runs in the triggerer: every ``poll_interval`` seconds it asks the fitness database for the newest
pending event (Strava or Google) and fires an asset event when that is newer than the last it fired for, so one
burst of events starts one run (the run applies every pending event, :func:`tasks.events.apply_pending`).
Events still waiting to be taken (a failed run gave its claims back, an id committed late) fire it again,
at most every ``refire_seconds``.
The query runs in a thread (``asyncio.to_thread``): the triggerer's event loop never waits on it.
Imported when ``dags/fitness_events.py`` is parsed: nothing heavier than Airflow's trigger base here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

DEFAULT_POLL_SECONDS = 5.0
#: events that still wait to be taken fire the trigger again after this long (not at every poll: a run may
#: be taking them right now)
DEFAULT_REFIRE_SECONDS = 60.0


def pending_events(db_conn_id: str) -> tuple[int | None, bool]:
    """The id of the newest event not applied yet (or None), and whether one waits to be taken (not
    claimed, or its claim expired)."""
    from contextlib import closing

    import sqlalchemy as sa

    from fitness_pipeline.db import connect, execute, transaction
    from fitness_pipeline.schema import webhook_event
    from fitness_pipeline.tasks.events import CLAIM_EXPIRES

    claimable = sa.or_(webhook_event.c.claimed_at.is_(None), webhook_event.c.claimed_at < sa.func.now() - CLAIM_EXPIRES)
    with closing(connect(db_conn_id)) as conn, transaction(conn) as cur:
        execute(cur, sa.select(sa.func.max(webhook_event.c.id), sa.func.bool_or(claimable))
                .where(webhook_event.c.processed_at.is_(None)))
        newest, waiting = cur.fetchone()
    return (int(newest) if newest is not None else None), bool(waiting)


class PendingWebhookEventsTrigger(BaseEventTrigger):
    """Fires when an event newer than ``after_id`` waits in ``webhook_event``."""

    def __init__(self, db_conn_id: str = "fitness_db", poll_interval: float = DEFAULT_POLL_SECONDS,
                 after_id: int = 0, refire_seconds: float = DEFAULT_REFIRE_SECONDS) -> None:
        super().__init__()
        self.db_conn_id, self.poll_interval, self.after_id = db_conn_id, float(poll_interval), int(after_id)
        self.refire_seconds = float(refire_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"db_conn_id": self.db_conn_id, "poll_interval": self.poll_interval, "after_id": self.after_id,
                 "refire_seconds": self.refire_seconds})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        loop = asyncio.get_running_loop()
        fired, fired_at = self.after_id, -float("inf")
        while True:
            try:
                newest, waiting = await asyncio.to_thread(pending_events, self.db_conn_id)
            except Exception as error:  # the database away: keep watching, say so once per failed poll
                self.log.warning("Cannot read webhook_event now (%s); polling on", type(error).__name__)
                newest, waiting = None, False
            again = waiting and loop.time() - fired_at >= self.refire_seconds
            if newest is not None and (newest > fired or again):
                fired, fired_at = max(fired, newest), loop.time()
                yield TriggerEvent({"newest_pending_event": newest})
            await asyncio.sleep(self.poll_interval)

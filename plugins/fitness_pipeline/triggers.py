"""The event trigger that watches ``webhook_event`` for the event-driven DAG (Airflow 3: an ``AssetWatcher``).

It runs in the triggerer: every ``poll_interval`` seconds it asks the fitness database for the newest
pending Strava event and fires an asset event when that is newer than the last it fired for, so one
burst of events starts one run (the run applies every pending event, :func:`tasks.events.apply_pending`).
The query runs in a thread (``asyncio.to_thread``): the triggerer's event loop never waits on it.
Imported when ``dags/fitness_events.py`` is parsed: nothing heavier than Airflow's trigger base here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

DEFAULT_POLL_SECONDS = 5.0


def newest_pending_event(db_conn_id: str) -> int | None:
    """The id of the newest Strava event not applied yet, or None."""
    from contextlib import closing

    import sqlalchemy as sa

    from fitness_pipeline.db import connect, execute, transaction
    from fitness_pipeline.schema import webhook_event

    with closing(connect(db_conn_id)) as conn, transaction(conn) as cur:
        execute(cur, sa.select(sa.func.max(webhook_event.c.id))
                .where(webhook_event.c.provider == "strava", webhook_event.c.processed_at.is_(None)))
        newest = cur.fetchone()[0]
    return int(newest) if newest is not None else None


class PendingWebhookEventsTrigger(BaseEventTrigger):
    """Fires when a Strava event newer than ``after_id`` waits in ``webhook_event``."""

    def __init__(self, db_conn_id: str = "fitness_db", poll_interval: float = DEFAULT_POLL_SECONDS,
                 after_id: int = 0) -> None:
        super().__init__()
        self.db_conn_id, self.poll_interval, self.after_id = db_conn_id, float(poll_interval), int(after_id)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"db_conn_id": self.db_conn_id, "poll_interval": self.poll_interval, "after_id": self.after_id})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        fired = self.after_id
        while True:
            try:
                newest = await asyncio.to_thread(newest_pending_event, self.db_conn_id)
            except Exception as error:  # the database away: keep watching, say so once per failed poll
                self.log.warning("Cannot read webhook_event now (%s); polling on", type(error).__name__)
                newest = None
            if newest is not None and newest > fired:
                fired = newest
                yield TriggerEvent({"newest_pending_event": newest})
            await asyncio.sleep(self.poll_interval)

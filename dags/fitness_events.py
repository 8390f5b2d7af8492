"""
### fitness_events

Applies the events the webhook receiver stored (table `webhook_event`; `fitness_pipeline.tasks.events`):
- **Strava**: an activity created or updated is read again (`GET /activities/{id}`) and upserted with its detail
  (laps, gear, calories); one deleted is marked deleted; an athlete who revoked the app is marked inactive (and,
  with `FITNESS_STRAVA_PURGE_ON_REVOKE=true`, loses their Strava data).
- **Google Health**: the notified data types of each athlete are synced for the windows the notifications name,
  through the same extract, transform and load as `fitness_sync`.

Each event is applied once however often it was delivered; one that cannot be applied goes to `quarantine` with
its reason. On Airflow 3 the DAG is scheduled on the asset `fitness_webhook_events`, whose watcher (a trigger in
the triggerer, `fitness_pipeline.triggers.PendingWebhookEventsTrigger`) polls the table every 5 s: a new event
starts a run within seconds (and every 15 minutes a run all the same, should the triggerer be down).
Airflow 2.11 has no asset watchers: there the DAG runs every 5 minutes.
`fitness_sync` stays the backstop that catches what events missed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

try:
    from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable, dag, task

    ASSET_WATCHERS = True
except ImportError:  # Airflow 2.10/2.11: no asset watchers
    from airflow.decorators import dag, task

    ASSET_WATCHERS = False

if ASSET_WATCHERS:
    from fitness_pipeline.triggers import PendingWebhookEventsTrigger

    #: an asset event per new pending event (a burst of them: one run)
    WEBHOOK_EVENTS = Asset("fitness_webhook_events", watchers=[
        AssetWatcher(name="fitness_webhook_events_watcher", trigger=PendingWebhookEventsTrigger())])
    # and every 15 minutes all the same: a backstop should the triggerer be down
    SCHEDULE: Any = AssetOrTimeSchedule(timetable=CronTriggerTimetable("*/15 * * * *", timezone="UTC"),
                                        assets=WEBHOOK_EVENTS)
else:
    SCHEDULE = "*/5 * * * *"


@dag(
    dag_id="fitness_events",
    schedule=SCHEDULE,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,  # one run applies every pending event; a second would find them claimed
    default_args={"owner": "fitness", "retries": 3, "retry_delay": dt.timedelta(seconds=30)},
    tags=["fitness", "strava", "fitbit", "webhooks"],
    doc_md=__doc__,
)
def fitness_events() -> None:
    @task
    def apply_events() -> dict[str, int]:
        import dataclasses

        from fitness_pipeline.errors import raise_for_airflow
        from fitness_pipeline.tasks.events import apply_pending

        try:
            return dataclasses.asdict(apply_pending())
        except Exception as error:  # Strava's budget spent: rescheduled for its reset, not retried every 30 s
            raise_for_airflow(error)

    apply_events()


fitness_events()

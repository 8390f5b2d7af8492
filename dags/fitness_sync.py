"""
### fitness_sync

Every hour, keeps a person's **Strava activities** and **Fitbit body weight and calories eaten**
(Google Health API v4: the Fitbit Web API was switched off on 2026-11-02) in PostgreSQL
(connection `fitness_db`).

Each source is a task group: `extract` (API → `raw_record`), `transform` (→ staging; bad records
→ `quarantine` with their reason), `load` (one-transaction upsert that writes only rows that really
changed; what happened goes to `sync_run`). Sources are independent: one failing never stops another.

The window is the run's data interval widened backwards by `lookback_hours` (param, default 72) so
late uploads are caught. A manual run without a logical date takes the last full hour.

Connections: `strava_default` (type `strava`), `fitbit_default` (type `fitbit`: a Google OAuth
client), `fitness_db` (PostgreSQL). See the README.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

try:
    from airflow.sdk import CronDataIntervalTimetable, Param, dag, task, task_group
except ImportError:  # Airflow 2.10/2.11
    from airflow.decorators import dag, task, task_group
    from airflow.models.param import Param
    from airflow.timetables.interval import CronDataIntervalTimetable

DEFAULT_LOOKBACK_HOURS = 72
#: one task group per source: Strava activities, Fitbit body weight, Fitbit calories eaten
SOURCES = ("strava", "fitbit_weight", "fitbit_calories")
#: extract tasks share an Airflow pool per API, so parallel runs and backfills cannot exceed its rate limit
POOLS = {"strava": "strava_api", "fitbit_weight": "google_health_api", "fitbit_calories": "google_health_api"}


@dag(
    dag_id="fitness_sync",
    # not "@hourly": on Airflow 3 that gives zero-length data intervals
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,  # runs overlap by the lookback: in parallel they would fetch the same data
    default_args={
        "owner": "fitness",
        "retries": 3,
        "retry_delay": dt.timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(hours=2),
    },
    params={  # Param resolves to airflow.sdk.Param on Airflow 3 (the noqa is for the Airflow 2 fallback)
        "lookback_hours": Param(  # noqa: AIR311
            DEFAULT_LOOKBACK_HOURS, type="integer", minimum=0,
            description="How far before the data interval to re-fetch (late uploads, edits, deletions).",
        ),
        "sources": Param(  # noqa: AIR311
            list(SOURCES), type="array", items={"type": "string", "enum": list(SOURCES)},
            description="Which sources this run syncs.",
        ),
        "history_start": Param(  # noqa: AIR311
            None, type=["null", "string"],
            description="History import: fetch from this date (YYYY-MM-DD, UTC) instead of the hourly window.",
        ),
        "history_end": Param(  # noqa: AIR311
            None, type=["null", "string"],
            description="History import: up to this date (default: the run's data interval end).",
        ),
        "daily_full_reconcile": Param(  # noqa: AIR311
            True, type="boolean",
            description="The run ending at 00:00 UTC re-lists all history to catch deletions older than the lookback.",
        ),
        "max_deleted_share": Param(  # noqa: AIR311
            0.5, type="number", minimum=0, maximum=1,
            description="Refuse (fail) to mark more than this share of a window's rows deleted.",
        ),
    },
    tags=["fitness", "strava", "fitbit"],
    doc_md=__doc__,
)
def fitness_sync() -> None:
    @task
    def ensure_schema() -> dict[str, Any]:
        from fitness_pipeline import tasks

        return tasks.ensure_schema()

    ensure_schema() >> [source_group(source) for source in SOURCES]


def source_group(source: str) -> Any:
    """extract -> transform -> load for one source; groups are independent of each other."""

    @task_group(group_id=source)
    def group() -> None:
        @task(task_id="extract", pool=POOLS[source])
        def extract(params: dict[str, Any] | None = None, data_interval_start: dt.datetime | None = None,
                    data_interval_end: dt.datetime | None = None, dag_run: Any = None) -> dict[str, Any]:
            from fitness_pipeline import tasks
            from fitness_pipeline.compat import AirflowSkipException

            if not tasks.wanted(params, source):
                raise AirflowSkipException(f"{source} is not in this run's sources")
            window = tasks.run_window(params, data_interval_start, data_interval_end, dag_run, source)
            return tasks.run_extract(source, dag_run.run_id, window)

        @task(task_id="transform")
        def transform(extracted: dict[str, Any]) -> dict[str, Any]:
            from fitness_pipeline import tasks

            return tasks.transform(extracted)

        @task(task_id="load")
        def load(transformed: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
            from fitness_pipeline import tasks

            return tasks.load(transformed, max_deleted_share=float((params or {}).get("max_deleted_share", 0.5)))

        load(transform(extract()))

    return group()


fitness_sync()

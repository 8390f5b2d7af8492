"""
### fitness_sync

Every hour, keeps each athlete's **Strava activities** and **Fitbit body weight and calories eaten**
(Google Health API v4: the Fitbit Web API was switched off on 2026-11-02) in PostgreSQL
(connection `fitness_db`).

`athletes` lists the active athletes (table `athlete`; param `athletes` picks some). Each source of the
registry (`fitness_pipeline.sources`) is a task group mapped over them (each mapped task is labelled with
the athlete's name): `extract` (API → `raw_record`), `transform` (→ staging; bad records → `quarantine`
with their reason), `load` (one-transaction upsert that writes only rows that really changed; what
happened goes to `sync_run`); Strava's group then runs `enrich`: the detail of activities that lack it (laps,
gear, calories), oldest first, within `detail_budget_share` of the API budget. Sources and athletes are
independent: one failing never stops another.

The window is the run's data interval widened backwards by `lookback_hours` (param, default 72) so
late uploads are caught. A manual run without a logical date takes the last full hour.

Connections: `strava_default` (type `strava`), `fitbit_default` (type `fitbit`: a Google OAuth
client), `fitness_db` (PostgreSQL). See the README.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fitness_pipeline.handover import DEFAULT_ATHLETE_ID, POLL_EVERY_CHOICES, RunParams
from fitness_pipeline.sources import ALIASES, REGISTRY, SourceSpec

try:
    from airflow.sdk import CronDataIntervalTimetable, Param, dag, task, task_group

    #: mapped task groups; Airflow 2.11's backfill deadlocks on them (apache/airflow#34012): there the DAG syncs
    #: the default athlete only, unmapped, as before athletes
    MAP_OVER_ATHLETES = True
except ImportError:  # Airflow 2.10/2.11
    from airflow.decorators import dag, task, task_group
    from airflow.models.param import Param
    from airflow.timetables.interval import CronDataIntervalTimetable

    MAP_OVER_ATHLETES = False

#: a deployment's Strava retention comes from the environment, so that the scheduled runs keep to it too
DEFAULTS = RunParams(strava_retention_days=RunParams.retention_from_environment(),
                     strava_poll_every_hours=RunParams.poll_every_from_environment())
#: the athlete of a single-athlete deployment (the only one synced on Airflow 2)
DEFAULT_ATHLETE = {"athlete_id": DEFAULT_ATHLETE_ID, "name": "default"}


@dag(
    dag_id="fitness_sync",
    # not "@hourly": on Airflow 3 that gives zero-length data intervals
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    # two: a history import (e.g. of a new athlete) and the hourly runs side by side. More would only fetch the
    # same data again (runs overlap by the lookback); two that overlap are safe (merges serialize per table,
    # the shared budget holds, an unfinished run's progress is never taken over)
    max_active_runs=2,
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
            int(DEFAULTS.lookback_hours), type="integer", minimum=0,
            description="How far before the data interval to re-fetch (late uploads, edits, deletions).",
        ),
        "sources": Param(  # noqa: AIR311
            REGISTRY.ids(), type="array", items={"type": "string", "enum": [*REGISTRY.ids(), *ALIASES]},
            description="Which sources this run syncs (\"strava\" is the former name of strava_activity).",
        ),
        "athletes": Param(  # noqa: AIR311
            list(DEFAULTS.athletes), type="array", items={"type": "string"},
            description="Which athletes (names) this run syncs; empty: every active one "
                        "(python -m fitness_pipeline.athletes list).",
        ),
        "history_start": Param(  # noqa: AIR311
            DEFAULTS.history_start, type=["null", "string"],
            description="History import: fetch from this date (YYYY-MM-DD, UTC) instead of the hourly window.",
        ),
        "history_end": Param(  # noqa: AIR311
            DEFAULTS.history_end, type=["null", "string"],
            description="History import: up to this date (default: the run's data interval end).",
        ),
        "daily_full_reconcile": Param(  # noqa: AIR311
            DEFAULTS.daily_full_reconcile, type="boolean",
            description="The run ending at 00:00 UTC re-lists all history to catch deletions older than the lookback.",
        ),
        "max_deleted_share": Param(  # noqa: AIR311
            DEFAULTS.max_deleted_share, type="number", minimum=0, maximum=1,
            description="Refuse (fail) to mark more than this share of a window's rows deleted.",
        ),
        "strava_retention_days": Param(  # noqa: AIR311
            DEFAULTS.strava_retention_days, type=["null", "integer"], minimum=1,
            description="Keep only this many days of Strava activities (for deployers bound by a caching limit): "
                        "older ones are not fetched and are deleted. Empty: keep everything.",
        ),
        "strava_poll_every_hours": Param(  # noqa: AIR311
            DEFAULTS.strava_poll_every_hours, type="integer", enum=list(POLL_EVERY_CHOICES),
            description="List Strava activities only every this many hours (midnight UTC always): with webhooks "
                        "on, events keep them current and the poll is the backstop. 1: every hour.",
        ),
        "purge_athlete": Param(  # noqa: AIR311
            DEFAULTS.purge_athlete, type=["null", "string"],
            description="Purge this athlete (name) before syncing: all their rows, quarantine entries and tokens, "
                        "in one transaction. Only with purge_confirm set to the same name.",
        ),
        "purge_confirm": Param(  # noqa: AIR311
            DEFAULTS.purge_confirm, type=["null", "string"],
            description="The purged athlete's name again, to confirm the purge.",
        ),
        "detail_budget_share": Param(  # noqa: AIR311
            DEFAULTS.detail_budget_share, type="number", minimum=0, maximum=1,
            description="Reading activities' details (laps, gear, calories; oldest missing first) uses at most this "
                        "share of each Strava rate-limit window and day, so the hourly sync always has room. 0: none.",
        ),
        "history_budget_share": Param(  # noqa: AIR311
            DEFAULTS.history_budget_share, type="number", minimum=0.05, maximum=1,
            description="A history import uses at most this share of each Strava rate-limit window and day; "
                        "the rest stays for the hourly runs.",
        ),
    },
    tags=["fitness", "strava", "fitbit"],
    doc_md=__doc__,
)
def fitness_sync() -> None:
    @task
    def ensure_schema() -> dict[str, Any]:
        from fitness_pipeline.tasks import prepare

        return prepare.ensure_schema()

    @task
    def athletes(schema_report: dict[str, Any], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        from fitness_pipeline.tasks import prepare

        run = RunParams.from_params(params)
        return prepare.athletes_to_sync(run.athletes, purge=run.purge_athlete, confirm=run.purge_confirm)

    schema = ensure_schema()
    who = athletes(schema) if MAP_OVER_ATHLETES else None
    for spec in REGISTRY:
        source_group(spec, schema, who)


#: each mapped task is labelled with its athlete's name (fitness_pipeline.compat.name_map_index)
ATHLETE_LABEL = "{{ athlete_name }}" if MAP_OVER_ATHLETES else None


def source_group(spec: SourceSpec, schema: Any, athletes: Any) -> Any:
    """extract -> transform -> load for one source, mapped over ``athletes`` (None: the default athlete, not
    mapped); groups (and athletes) are independent of each other (a source whose tables could not be upgraded
    fails its own extract, with ``schema``'s message). Extract tasks share an Airflow pool per API, so parallel
    runs and backfills stay inside its rate limit."""
    source = spec.id

    @task_group(group_id=source, tooltip=spec.description)
    def group(athlete: dict[str, Any]) -> None:
        @task(task_id="extract", pool=spec.pool, map_index_template=ATHLETE_LABEL)
        def extract(schema_report: dict[str, Any] | None, athlete: dict[str, Any],
                    params: dict[str, Any] | None = None, data_interval_start: dt.datetime | None = None,
                    data_interval_end: dt.datetime | None = None, dag_run: Any = None) -> dict[str, Any]:
            from fitness_pipeline.compat import AirflowSkipException
            from fitness_pipeline.errors import raise_for_airflow
            from fitness_pipeline.tasks import extract as step
            from fitness_pipeline.tasks import plan, prepare

            spec, run = plan.start_task(source, athlete, params, mapped=MAP_OVER_ATHLETES)
            if not plan.polled(spec, run, data_interval_end):
                raise AirflowSkipException(f"{source} is listed every {getattr(run, spec.poll_every_param)} hours "
                                           "(webhook events keep it current meanwhile)")
            try:
                prepare.check_source_schema(source, schema_report)
            except Exception as error:
                raise_for_airflow(error)
            window = plan.window_for_run(spec, run, data_interval_start, data_interval_end, dag_run)
            return step.extract(source, dag_run.run_id, window, budget_share=plan.budget_share(run),
                                athlete_id=athlete["athlete_id"]).to_xcom()

        @task(task_id="transform", map_index_template=ATHLETE_LABEL)
        def transform(extracted: dict[str, Any], athlete: dict[str, Any]) -> dict[str, Any]:
            from fitness_pipeline.compat import name_map_index
            from fitness_pipeline.handover import Extracted
            from fitness_pipeline.tasks import transform as step

            name_map_index(athlete["name"])
            return step.transform(Extracted.from_xcom(extracted)).to_xcom()

        @task(task_id="load", map_index_template=ATHLETE_LABEL)
        def load(staged: dict[str, Any], athlete: dict[str, Any], params: dict[str, Any] | None = None,
                 dag_run: Any = None) -> dict[str, Any]:
            from fitness_pipeline.compat import name_map_index
            from fitness_pipeline.handover import Staged
            from fitness_pipeline.tasks import load as step

            name_map_index(athlete["name"])
            from fitness_pipeline import sources
            from fitness_pipeline.tasks import plan

            run = RunParams.from_params(params)
            return step.load(Staged.from_xcom(staged), max_deleted_share=run.max_deleted_share,
                             dag_id=dag_run.dag_id,
                             retention_days=plan.retention_days(sources.get(source), run)).to_xcom()

        loaded = load(transform(extract(schema, athlete), athlete), athlete)
        if spec.enrich is not None:
            # also after a skipped load (a run without new records still enriches older ones), never after a failed one
            @task(task_id="enrich", pool=spec.pool, map_index_template=ATHLETE_LABEL, trigger_rule="none_failed")
            def enrich(athlete: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
                from fitness_pipeline.errors import raise_for_airflow
                from fitness_pipeline.sources import resolve
                from fitness_pipeline.tasks import plan
                spec, run = plan.start_task(source, athlete, params, mapped=MAP_OVER_ATHLETES)
                try:
                    return resolve(spec.enrich)(athlete["athlete_id"], run)
                except Exception as error:
                    raise_for_airflow(error)
            loaded >> enrich(athlete)

    return group(DEFAULT_ATHLETE) if athletes is None else group.expand(athlete=athletes)


fitness_sync()

"""The ``ensure_schema`` task: create or upgrade the tables, clear what dead batches left behind."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from contextlib import closing
from typing import Any

import sqlalchemy as sa

from fitness_pipeline import sources
from fitness_pipeline.db import FITNESS_DB_CONN_ID, connect, execute, transaction
from fitness_pipeline.schema import DEFAULT_ATHLETE_ID, extract_cursor, raw_record, staging_for

log = logging.getLogger(__name__)

#: raw and staged rows of batches that never finished are removed after this long
STALE_AFTER = dt.timedelta(days=7)


def source_tables(spec: sources.SourceSpec) -> list[sa.Table]:
    """The tables one source writes: its target, its companions, what it enriches, and their staging tables."""
    tables = [spec.target, *spec.companion_tables(), *spec.enriched_tables()]
    return [*tables, *(staging_for(table) for table in tables)]


def ensure_schema(conn_id: str = FITNESS_DB_CONN_ID) -> dict[str, Any]:
    """Create or upgrade the tables (with the staging table of every registered source's tables), and
    clear landing/staging rows of long-dead batches.

    Each source's tables are applied on their own (``ddl.ensure_schema``'s ``groups``): a table that
    needs a person (an old column without a safe cast, differing duplicate keys) leaves that source's
    tables as they were and is reported under ``problems`` (source id -> what to do); the other sources
    are upgraded and load as usual, and that source's extract fails with the message
    (:func:`check_source_schema`).

    Returns what changed (``created_tables``, ``added_columns``, ``altered_columns``,
    ``created_indexes``, ``altered_tables``, ``views``, ``removed_duplicates``: lists of names, empty
    when the schema was current; ``problems``: a dict).
    """
    from fitness_pipeline.ddl import ensure_schema as apply_schema
    from fitness_pipeline.errors import raise_for_airflow

    groups = {spec.id: source_tables(spec) for spec in sources.REGISTRY}  # a later source brings its own table
    with closing(connect(conn_id)) as conn:
        try:
            changes = apply_schema(conn, groups=groups)
        except Exception as error:  # the shared tables cannot be made: no source can run
            raise_for_airflow(error)
        ready = [staging_for(t) for spec in sources.REGISTRY if spec.id not in changes.problems
                 for t in (spec.target, *spec.companion_tables())]
        remove_stale_rows(conn, [raw_record, extract_cursor, *ready])
        remove_old_events(conn)
    return dataclasses.asdict(changes)


def athletes_to_sync(names: tuple[str, ...] = (), conn_id: str = FITNESS_DB_CONN_ID, purge: str | None = None,
                     confirm: str | None = None) -> list[dict[str, Any]]:
    """The athletes a run syncs (each source's tasks are mapped over them): every active one, or those
    ``names`` (the ``athletes`` param; an unknown or inactive name fails the task). With ``purge`` (param
    ``purge_athlete``) that athlete is purged first, in one transaction, if ``confirm`` names them too."""
    from fitness_pipeline import athletes
    from fitness_pipeline.errors import raise_for_airflow

    with closing(connect(conn_id)) as conn:
        try:
            if purge is not None:
                with transaction(conn) as cur:
                    person = athletes.find(cur, purge)
                    if confirm != person.name:
                        raise athletes.AthleteError(
                            f"Not purging {person.name!r}: set purge_confirm to the same name to confirm.")
                    deleted = athletes.purge(cur, person)
                log.warning("Athlete %d purged: %s", person.id, ", ".join(f"{n} {t}" for t, n in deleted.items()))
            with transaction(conn) as cur:
                chosen = athletes.to_sync(cur, names)
        except Exception as error:
            raise_for_airflow(error)
    # ids, not names: a name may be a person's (the UI shows it to those allowed to see the run)
    log.info("Syncing %d athlete(s): ids %s", len(chosen), ", ".join(str(a.id) for a in chosen) or "none active")
    return [a.to_xcom() for a in chosen]


def default_athlete_only(names: tuple[str, ...] = (), conn_id: str = FITNESS_DB_CONN_ID) -> None:
    """Where the DAG is not mapped over athletes (Airflow 2): a run syncs the default athlete, unless they are
    inactive (disabled, purged: the task is skipped, so a purge is never undone by the Connection's token) or
    the ``athletes`` param names only others (a clear failure: several athletes need Airflow 3)."""
    from fitness_pipeline import athletes
    from fitness_pipeline.compat import AirflowSkipException
    from fitness_pipeline.errors import raise_for_airflow

    with closing(connect(conn_id)) as conn, transaction(conn) as cur:
        person = next((a for a in athletes.all_athletes(cur) if a.id == DEFAULT_ATHLETE_ID), None)
    if names and (person is None or person.name not in names):
        raise_for_airflow(athletes.AthleteError(
            "This Airflow syncs the default athlete only (several athletes need Airflow 3): leave the athletes "
            "param empty."))
    if person is not None and not person.active:
        raise AirflowSkipException(f"The default athlete is inactive: {person.inactive_reason or 'disabled'}")


def remove_old_events(conn: Any) -> int:
    """Delete the webhook events applied more than :data:`STALE_AFTER` ago, and the Google notifications
    received that long ago (not applied yet: the poll syncs those data). Returns the rows deleted."""
    from fitness_pipeline.schema import webhook_event

    before = sa.func.now() - STALE_AFTER
    with transaction(conn) as cur:
        execute(cur, sa.delete(webhook_event).where(sa.or_(
            webhook_event.c.processed_at < before,
            sa.and_(webhook_event.c.provider == "google", webhook_event.c.received_at < before))))
        return int(cur.rowcount)


def remove_stale_rows(conn: Any, tables: list[sa.Table]) -> None:
    """Delete the hand-over rows older than :data:`STALE_AFTER` from ``tables``, and those of athletes no
    longer in the athlete table (purged while an extract of theirs was landing pages). Housekeeping never waits for
    a table another session has locked (a long load, a person's maintenance): that table is left for the next
    run (``lock_timeout``), and the run goes on."""
    from fitness_pipeline.schema import ATHLETE_ID, athlete

    for table in tables:
        stale = table.c.created_at < sa.func.now() - STALE_AFTER
        # and at once what an extract of an athlete purged meanwhile landed (a batch id ends with the athlete's)
        known = sa.select(athlete.c.id)
        if ATHLETE_ID in table.c:
            stale = sa.or_(stale, table.c[ATHLETE_ID].not_in(known))
        else:
            owner = sa.func.substring(table.c.batch_id, r"/athlete-(\d+)$")
            stale = sa.or_(stale, sa.and_(owner.is_not(None), sa.cast(owner, sa.Integer).not_in(known)))
        try:
            with transaction(conn) as cur:
                cur.execute("SET LOCAL lock_timeout = '2s'")
                execute(cur, sa.delete(table).where(stale))
        except Exception as error:
            if (getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)) != "55P03":  # lock_not_available
                raise
            log.warning("Stale rows of %s left for the next run: the table is locked", table.name)


def check_source_schema(source_id: str, report: dict[str, Any] | None, conn_id: str = FITNESS_DB_CONN_ID) -> None:
    """Fail ``source_id``'s extract when the ``ensure_schema`` task's ``report`` says its tables could not be
    upgraded, unless they can be now (a person fixed them and cleared this task only).

    Raises :class:`~fitness_pipeline.ddl.SchemaError` (needs a person: no retries) with what to do.
    """
    from fitness_pipeline.ddl import SchemaError
    from fitness_pipeline.ddl import ensure_schema as apply_schema
    from fitness_pipeline.views import VIEWS

    problem = ((report or {}).get("problems") or {}).get(source_id)
    if problem is None:
        return
    tables = source_tables(sources.get(source_id))
    with closing(connect(conn_id)) as conn:
        # with the views: a column type cannot change under one of ours, so they are dropped and made again
        again = apply_schema(conn, tables=tables, views=VIEWS, groups={source_id: tables})
    if source_id in again.problems:
        raise SchemaError(f"{source_id}: its tables could not be upgraded, so it does not sync (the other sources "
                          f"do). {again.problems[source_id]}")

"""The ``ensure_schema`` task: create or upgrade the tables, clear what dead batches left behind."""

from __future__ import annotations

import dataclasses
import datetime as dt
from contextlib import closing
from typing import Any

import sqlalchemy as sa

from fitness_pipeline import sources
from fitness_pipeline.db import FITNESS_DB_CONN_ID, connect, execute, transaction
from fitness_pipeline.schema import STAGING, extract_cursor, raw_record, staging_for

#: raw and staged rows of batches that never finished are removed after this long
STALE_AFTER = dt.timedelta(days=7)


def ensure_schema(conn_id: str = FITNESS_DB_CONN_ID) -> dict[str, Any]:
    """Create or upgrade the tables (with the staging table of every registered source's tables), and
    clear landing/staging rows of long-dead batches.

    Returns what changed (``created_tables``, ``added_columns``, ``altered_columns``,
    ``created_indexes``, ``altered_tables``, ``views``: lists of names, empty when the schema was current).
    """
    from fitness_pipeline.ddl import ensure_schema as apply_schema
    from fitness_pipeline.errors import raise_for_airflow

    for spec in sources.REGISTRY:  # a source added after the built-in ones brings its own table
        for table in (spec.target, *spec.companion_tables()):
            staging_for(table)

    with closing(connect(conn_id)) as conn:
        try:
            changes = apply_schema(conn)
        except Exception as error:  # a view of the user's in the way needs a person: no retries
            raise_for_airflow(error)
        with transaction(conn) as cur:
            cutoff = sa.func.now() - STALE_AFTER
            for table in (raw_record, extract_cursor, *STAGING.values()):
                execute(cur, sa.delete(table).where(table.c.created_at < cutoff))
    return dataclasses.asdict(changes)
